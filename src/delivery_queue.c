/*-------------------------------------------------------------------------
 *
 * delivery_queue.c
 *		Final tasks waiting for their delivery (write-back, callback): the
 *		worker marks them, the delivery process takes and finishes them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "plan_cache.h"
#include "store.h"

typedef enum KlingDeliveryPlanId
{
	KLING_PLAN_MARK_DELIVERIES,
	KLING_PLAN_CLAIM_DELIVERIES,
	KLING_PLAN_FINISH_DELIVERY,
	KLING_NUM_DELIVERY_PLANS
} KlingDeliveryPlanId;

static KlingPlan kling_delivery_plans[KLING_NUM_DELIVERY_PLANS] = {
	/*
	 * Of the tasks a round made final, mark those with something to deliver
	 * (a write-back of a completed task, a callback) for the delivery
	 * process; returns every task with its status and whether it was marked.
	 * A task whose video is to be kept is delivered (and announced) once
	 * that is settled: the keeper marks it then.
	 */
	[KLING_PLAN_MARK_DELIVERIES] = {
		"WITH marked AS (UPDATE %1$s SET delivery_pending = (keep_state IS DISTINCT FROM 'waiting')"
		"   WHERE id = ANY ($1)"
		"   AND ((target_table IS NOT NULL AND status = 'completed') OR opts ? 'callback'"
		"        OR keep_state = 'waiting')"
		"   RETURNING id)"
		" SELECT t.id, t.status, t.id IN (SELECT id FROM marked) FROM %1$s t WHERE t.id = ANY ($1)",
		1, {INT8ARRAYOID}
	},
	[KLING_PLAN_CLAIM_DELIVERIES] = {
		"SELECT t.id, t.owner, t.status, t.video_url, t.error, t.target_table::oid,"
		" t.target_id_column, t.target_url_column, t.opts ->> 'callback', t,"
		" CASE WHEN t.keep_state = 'kept' THEN t.target_video_column END, t.video_key,"
		" (SELECT v.data FROM %2$s.kling_videos v WHERE v.task_id = t.id)"
		" FROM %1$s t WHERE t.delivery_pending ORDER BY t.id LIMIT $1 FOR UPDATE OF t SKIP LOCKED",
		1, {INT4OID}
	},
	[KLING_PLAN_FINISH_DELIVERY] = {
		"UPDATE %1$s SET delivery_pending = false, updated_at = now(),"
		" delivery_error = CASE WHEN keep_state = 'failed'"
		"  THEN nullif(concat_ws('; ', $2, substring(delivery_error from 'video not kept: .*$')), '')"
		"  ELSE $2 END"
		" WHERE id = $1",
		2, {INT8OID, TEXTOID}
	},
};

/*
 * Of the given final tasks, mark for the delivery process those with
 * something to deliver.  Returns a KlingFinal for every one that still
 * exists.
 */
List *
kling_store_mark_deliveries(const KlingIds *final)
{
	Datum		values[1];
	List	   *finals = NIL;

	values[0] = kling_store_id_array(final->ids, final->n);
	kling_execute(&kling_delivery_plans[KLING_PLAN_MARK_DELIVERIES], values, NULL, 0);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		KlingFinal *f = MemoryContextAllocZero(kling_round_context, sizeof(KlingFinal));
		bool		isnull;

		f->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		f->status = kling_result_text(r, 2);
		f->marked = DatumGetBool(SPI_getbinval(tuple, desc, 3, &isnull));
		finals = lappend(finals, f);
	}
	return finals;
}

/*
 * Claim up to limit final tasks whose delivery is pending, with all it
 * takes to deliver each: owner, result, write-back target, callback, row.
 */
List *
kling_store_claim_deliveries(int limit)
{
	Datum		values[1] = {Int32GetDatum(limit)};
	List	   *deliveries = NIL;

	kling_execute(&kling_delivery_plans[KLING_PLAN_CLAIM_DELIVERIES], values, NULL, 0);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		KlingDelivery *d = MemoryContextAllocZero(kling_round_context, sizeof(KlingDelivery));
		MemoryContext spi;
		bool		isnull;
		Datum		oid;

		d->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		d->owner = kling_result_text(r, 2);
		d->status = kling_result_text(r, 3);
		d->video_url = kling_result_text(r, 4);
		d->error = kling_result_text(r, 5);
		oid = SPI_getbinval(tuple, desc, 6, &isnull);
		d->target_table = isnull ? InvalidOid : DatumGetObjectId(oid);
		d->target_id_column = kling_result_text(r, 7);
		d->target_url_column = kling_result_text(r, 8);
		d->callback = kling_result_text(r, 9);

		d->target_video_column = kling_result_text(r, 11);
		d->video_key = kling_result_text(r, 12);
		oid = SPI_getbinval(tuple, desc, 13, &isnull);
		d->video_object = isnull ? InvalidOid : DatumGetObjectId(oid);

		spi = MemoryContextSwitchTo(kling_round_context);
		d->row = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tuple, desc, 10, &isnull)));
		deliveries = lappend(deliveries, d);
		MemoryContextSwitchTo(spi);
	}
	return deliveries;
}

/* A task's delivery is done; error says what went wrong, or is NULL. */
void
kling_store_finish_delivery(int64 id, const char *error)
{
	Datum		values[2] = {Int64GetDatum(id), error ? CStringGetTextDatum(error) : (Datum) 0};
	char		nulls[2] = {' ', error ? ' ' : 'n'};

	kling_execute(&kling_delivery_plans[KLING_PLAN_FINISH_DELIVERY], values, nulls, 0);
}

