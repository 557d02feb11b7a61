/*-------------------------------------------------------------------------
 *
 * delivery.c
 *		Delivering final tasks: the video URL is written back into the row
 *		that asked for it, the task's callback is called, and NOTIFY kling
 *		announces it.  The worker's round marks what there is to deliver;
 *		the delivery process (deliverer.c) does it.
 *
 * Write-back and callbacks run as the role that submitted the task, never
 * with the worker's rights, sandboxed (sandbox.c): a deleted row, a dropped
 * table or column, a revoked permission, a failing or slow callback is
 * recorded on the task (delivery_error) and holds nothing up for longer
 * than kling.delivery_timeout.
 *
 * The notification says only which task became final and how (its id and
 * status): any role may LISTEN, and the rest is the owner's to read.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "compat.h"
#include "delivery.h"
#include "plan_cache.h"
#include "sandbox.h"
#include "shmem.h"
#include "store.h"
#include "subxact.h"

static char *kling_run_as_owner(KlingDelivery *d, KlingStep step);
static void kling_write_back(void *arg);
static void kling_call_back(void *arg);

/*
 * Run one delivery step as the task's owner, sandboxed.  Returns NULL on
 * success, or the error message.
 */
static char *
kling_run_as_owner(KlingDelivery *d, KlingStep step)
{
	Oid			role = get_role_oid(d->owner, true);

	if (!OidIsValid(role))
		return psprintf("role \"%s\" no longer exists", d->owner);
	return kling_run_as_user(role, step, d);
}

/*
 * Write the video URL (and the kept video, or its object key, if the
 * trigger named a column for it) into the row of the target table that
 * holds the task's id.  Identifiers are quoted, values passed as
 * parameters.
 */
static void
kling_write_back(void *arg)
{
	KlingDelivery *d = arg;
	char	   *relname = get_rel_name(d->target_table);
	StringInfoData sql;
	Datum		values[3];
	Oid			types[3] = {TEXTOID, INT8OID, InvalidOid};
	int			nargs = 2;
	int			rc;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the table to write the video URL into no longer exists")));

	initStringInfo(&sql);
	appendStringInfo(&sql, "UPDATE %s SET %s = $1",
					 quote_qualified_identifier(get_namespace_name(get_rel_namespace(d->target_table)),
												relname),
					 quote_identifier(d->target_url_column));
	if (d->video != (Datum) 0)
	{
		appendStringInfo(&sql, ", %s = $3", quote_identifier(d->target_video_column));
		values[2] = d->video;
		types[2] = d->video_type;
		nargs = 3;
	}
	appendStringInfo(&sql, " WHERE %s = $2", quote_identifier(d->target_id_column));
	values[0] = CStringGetTextDatum(d->video_url);
	values[1] = Int64GetDatum(d->id);
	rc = SPI_execute_with_args(sql.data, nargs, types, values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "write-back failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no row of %s has %s = %lld any more (deleted or changed)",
						relname, d->target_id_column, (long long) d->id)));
}

/*
 * What the write-back puts in the video column: the bytes of a video kept
 * in the database (read here, with the delivery process's own rights:
 * the owner has none on the large object) or the object key of one kept
 * in a bucket.
 */
static void
kling_read_kept_video(void *arg)
{
	KlingDelivery *d = arg;
	Datum		object = ObjectIdGetDatum(d->video_object);
	MemoryContext old;
	Datum		bytes;
	bool		isnull;

	if (!OidIsValid(d->video_object))
	{
		d->video = CStringGetTextDatum(d->video_key);
		d->video_type = TEXTOID;
		return;
	}
	if (SPI_execute_with_args("SELECT pg_catalog.lo_get($1)", 1, (Oid[]) {OIDOID},
							  &object, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the large object of kling task %lld", (long long) d->id);
	bytes = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	old = MemoryContextSwitchTo(kling_round_context);
	d->video = datumCopy(bytes, false, -1);
	MemoryContextSwitchTo(old);
	SPI_freetuptable(SPI_tuptable);
	d->video_type = BYTEAOID;
}

/*
 * Call the task's callback with its row; the result is ignored.  The
 * callback was stored schema-qualified, and is looked up again here, so
 * that a function or type dropped meanwhile fails this delivery alone.
 */
static void
kling_call_back(void *arg)
{
	KlingDelivery *d = arg;
	Oid			callback;
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 1);

	callback = DatumGetObjectId(DirectFunctionCall1(regprocedurein,
													CStringGetDatum(d->callback)));
	if (kling_proc_aclcheck(callback, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(callback))));

	fmgr_info(callback, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = d->row;
	fcinfo->args[0].isnull = false;
	(void) FunctionCallInvoke(fcinfo);
}

/*
 * Announce the tasks the worker's round made final, in the round's
 * transaction: those with something to deliver are marked for the delivery
 * process, which announces them once delivered; the others are announced
 * now.  Returns how many were marked.
 */
int
kling_announce_finalized(const KlingIds *final)
{
	int			marked = 0;
	ListCell   *lc;

	if (final->n == 0)
		return 0;
	foreach(lc, kling_store_mark_deliveries(final))
	{
		KlingFinal *f = lfirst(lc);

		if (f->marked)
			marked++;
		else
			kling_notify_final(f->id, f->status);
	}
	return marked;
}

/*
 * Deliver one final task: its write-back, then its callback, each as its
 * owner, sandboxed.  Records what went wrong, if anything, and announces
 * the task; both take effect when the delivery process's transaction
 * commits.
 */
void
kling_deliver(KlingDelivery *d)
{
	StringInfoData problems;

	initStringInfo(&problems);
	if (OidIsValid(d->target_table) && strcmp(d->status, "completed") == 0)
	{
		char	   *failure = NULL;

		if (d->target_video_column != NULL)
			failure = kling_try_in_subtransaction(kling_read_kept_video, d);
		if (failure == NULL)
			failure = kling_run_as_owner(d, kling_write_back);

		if (failure != NULL)
			appendStringInfo(&problems, "write-back: %s", failure);
	}
	if (d->callback != NULL)
	{
		char	   *failure = kling_run_as_owner(d, kling_call_back);

		if (failure != NULL)
			appendStringInfo(&problems, "%scallback: %s",
							 problems.len > 0 ? "; " : "", failure);
	}
	if (problems.len > 0)
		ereport(LOG,
				(errmsg("kling: task %lld could not be delivered: %s",
						(long long) d->id, problems.data)));
	kling_store_finish_delivery(d->id, problems.len > 0 ? problems.data : NULL);
	kling_notify_final(d->id, d->status);
}

/*
 * NOTIFY kling that a task is final, and wake kling_wait callers, both when
 * the current transaction commits.  The payload is small whatever the
 * provider said: {"id": N, "status": "..."}.
 */
void
kling_notify_final(int64 id, const char *status)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"id\": " INT64_FORMAT ", \"status\": ", id);
	escape_json(&payload, status);
	appendStringInfoChar(&payload, '}');

	Async_Notify("kling", payload.data);
	kling_announce_final_at_commit();
}
