/*-------------------------------------------------------------------------
 *
 * task_history.c
 *		The history of final tasks: what recent generations took, and
 *		retention (kling.retention), which deletes old final tasks.
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

typedef enum KlingHistoryPlanId
{
	KLING_PLAN_DELETE_EXPIRED,
	KLING_PLAN_UNLINK_PARTIAL,
	KLING_PLAN_GENERATION_TIMES,
	KLING_NUM_HISTORY_PLANS
} KlingHistoryPlanId;

static KlingPlan kling_history_plans[KLING_NUM_HISTORY_PLANS] = {
	[KLING_PLAN_DELETE_EXPIRED] = {
		"DELETE FROM %1$s WHERE id = ANY (ARRAY(SELECT id FROM %1$s"
		" WHERE status IN ('completed', 'failed', 'cancelled')"
		" AND completed_at < now() - $1 * interval '1 second' LIMIT $2"
		" FOR UPDATE SKIP LOCKED))"
		" RETURNING video_key",
		2, {INT4OID, INT4OID}
	},
	[KLING_PLAN_UNLINK_PARTIAL] = {
		"SELECT pg_catalog.lo_unlink($1) WHERE EXISTS"
		" (SELECT FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = $1)",
		1, {OIDOID}
	},
	[KLING_PLAN_GENERATION_TIMES] = {
		"SELECT opts ->> 'model', opts ->> 'duration', count(*)::int4,"
		" (percentile_cont(0.01) WITHIN GROUP"
		"   (ORDER BY extract(epoch FROM completed_at - submitted_at) * 1000))::int4"
		" FROM (SELECT opts, submitted_at, completed_at FROM %1$s"
		"       WHERE status = 'completed' AND completed_at > now() - interval '7 days'"
		"       ORDER BY completed_at DESC LIMIT 2000) recent"
		" WHERE submitted_at IS NOT NULL"
		" GROUP BY 1, 2",
		0, {0}
	},
};

/*
 * Delete up to limit final tasks older than retention_s; returns how many,
 * and adds to *keys the object keys of their videos kept in a bucket (the
 * ones kept in the database go with their rows, and large objects still
 * being stored are removed here).
 */
int
kling_store_delete_expired(int retention_s, int limit, List **keys)
{
	Datum		values[2] = {Int32GetDatum(retention_s), Int32GetDatum(limit)};
	int			deleted;
	List	   *partial = NIL;
	ListCell   *lc;

	kling_execute(&kling_history_plans[KLING_PLAN_DELETE_EXPIRED], values, NULL, 0);
	deleted = (int) SPI_processed;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *key = kling_result_text(i, 1);

		if (key != NULL && strncmp(key, "lo:", 3) == 0)
			partial = lappend(partial, key);
		else if (key != NULL)
			*keys = lappend(*keys, key);
	}
	/* A large object still being stored goes with its task. */
	foreach(lc, partial)
	{
		Datum		object = DirectFunctionCall1(oidin, CStringGetDatum((char *) lfirst(lc) + 3));

		kling_execute(&kling_history_plans[KLING_PLAN_UNLINK_PARTIAL], &object, NULL, 0);
	}
	return deleted;
}

/*
 * How long recent tasks took at the provider, per model and duration: the
 * number of samples and the 1st percentile, from the last 2000 completed
 * in the past week.  Allocated in the given context.
 */
List *
kling_store_generation_times(MemoryContext context)
{
	List	   *times = NIL;
	MemoryContext spi;

	kling_execute(&kling_history_plans[KLING_PLAN_GENERATION_TIMES], NULL, NULL, 0);
	spi = MemoryContextSwitchTo(context);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		KlingGenerationTime *t = palloc0(sizeof(KlingGenerationTime));
		bool		isnull;

		t->model = SPI_getvalue(tuple, desc, 1);
		t->duration = SPI_getvalue(tuple, desc, 2);
		t->samples = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		t->p1_ms = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		if (t->model != NULL && t->duration != NULL)
			times = lappend(times, t);
	}
	MemoryContextSwitchTo(spi);
	return times;
}
