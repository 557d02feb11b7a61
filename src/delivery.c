/*-------------------------------------------------------------------------
 *
 * delivery.c
 *		Delivering the tasks a worker round made final: the video URL is
 *		written back into the row that asked for it, the task's callback is
 *		called, and NOTIFY kling announces it.
 *
 * Write-back and callbacks run as the role that submitted the task, never
 * with the worker's rights, each in a subtransaction of its own: a deleted
 * row, a dropped table or column, a revoked permission or a failing
 * callback is recorded on the task (delivery_error) and holds nothing up.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"

#include "delivery.h"
#include "shmem.h"
#include "store.h"
#include "subxact.h"

/* Limits on what a user's table or callback may hold the worker up. */
#define KLING_DELIVERY_LOCK_TIMEOUT "2s"

/* Error text kept in notifications, at most. */
#define KLING_NOTIFY_ERROR_CHARS 200

typedef void (*KlingDeliveryStep) (KlingDelivery *d);

static char *kling_run_as_owner(KlingDelivery *d, KlingDeliveryStep step);
static void kling_write_back(KlingDelivery *d);
static void kling_call_back(KlingDelivery *d);

/* A delivery step and the task it is for. */
typedef struct KlingStepAsOwner
{
	KlingDeliveryStep step;
	KlingDelivery *delivery;
	Oid			role;
} KlingStepAsOwner;

/* Run the step as the owner; an error rolls the user id back too. */
static void
kling_step_as_owner(void *arg)
{
	KlingStepAsOwner *s = arg;
	Oid			save_userid;
	int			save_sec_context;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(s->role, save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
	s->step(s->delivery);
	SetUserIdAndSecContext(save_userid, save_sec_context);
}

/*
 * Run one delivery step as the task's owner in a subtransaction.  Returns
 * NULL on success, or the error message.
 */
static char *
kling_run_as_owner(KlingDelivery *d, KlingDeliveryStep step)
{
	KlingStepAsOwner s = {step, d, get_role_oid(d->owner, true)};

	if (!OidIsValid(s.role))
		return psprintf("role \"%s\" no longer exists", d->owner);
	return kling_try_in_subtransaction(kling_step_as_owner, &s);
}

/*
 * Write the video URL into the row of the target table that holds the
 * task's id.  Identifiers are quoted, values passed as parameters.
 */
static void
kling_write_back(KlingDelivery *d)
{
	char	   *relname = get_rel_name(d->target_table);
	char	   *sql;
	Datum		values[2];
	int			rc;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("the table to write the video URL into no longer exists")));

	sql = psprintf("UPDATE %s SET %s = $1 WHERE %s = $2",
				   quote_qualified_identifier(get_namespace_name(get_rel_namespace(d->target_table)),
											  relname),
				   quote_identifier(d->target_url_column),
				   quote_identifier(d->target_id_column));
	values[0] = CStringGetTextDatum(d->video_url);
	values[1] = Int64GetDatum(d->id);
	rc = SPI_execute_with_args(sql, 2, (Oid[]) {TEXTOID, INT8OID}, values, NULL, false, 0);
	if (rc != SPI_OK_UPDATE)
		elog(ERROR, "write-back failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("no row of %s has %s = %lld any more (deleted or changed)",
						relname, d->target_id_column, (long long) d->id)));
}

/* Call the task's callback with its row; the result is ignored. */
static void
kling_call_back(KlingDelivery *d)
{
	FmgrInfo	flinfo;
	LOCAL_FCINFO(fcinfo, 1);

	if (pg_proc_aclcheck(d->callback, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(d->callback))));

	fmgr_info(d->callback, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = d->row;
	fcinfo->args[0].isnull = false;
	(void) FunctionCallInvoke(fcinfo);
}

/*
 * Deliver every task the round made final so far.  Runs inside the round's
 * transaction, so notifications go out when it commits.
 */
void
kling_deliver_finalized(void)
{
	List	   *finalized = kling_store_finalized();
	ListCell   *lc;

	if (finalized == NIL)
		return;

	/* A locked row in a user's table must not stall the worker. */
	(void) set_config_option("lock_timeout", KLING_DELIVERY_LOCK_TIMEOUT,
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_LOCAL,
							 true, 0, false);

	foreach(lc, kling_store_fetch_deliveries(finalized))
	{
		KlingDelivery *d = lfirst(lc);
		StringInfoData problems;

		initStringInfo(&problems);
		if (OidIsValid(d->target_table) && strcmp(d->status, "completed") == 0)
		{
			char	   *failure = kling_run_as_owner(d, kling_write_back);

			if (failure != NULL)
				appendStringInfo(&problems, "write-back: %s", failure);
		}
		if (d->error_callback_missing != NULL)
			appendStringInfo(&problems, "%scallback: function %s no longer exists",
							 problems.len > 0 ? "; " : "", d->error_callback_missing);
		else if (OidIsValid(d->callback))
		{
			char	   *failure = kling_run_as_owner(d, kling_call_back);

			if (failure != NULL)
				appendStringInfo(&problems, "%scallback: %s",
								 problems.len > 0 ? "; " : "", failure);
		}
		if (problems.len > 0)
		{
			ereport(LOG,
					(errmsg("kling: task %lld could not be delivered: %s",
							(long long) d->id, problems.data)));
			kling_store_note_delivery_error(d->id, problems.data);
		}

		kling_notify_final(d->id, d->status, d->video_url, d->error);
	}
}

/*
 * NOTIFY kling with a JSON summary of a final task, and wake kling_wait
 * callers, both when the current transaction commits.
 */
void
kling_notify_final(int64 id, const char *status, const char *video_url,
				   const char *error)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfo(&payload, "{\"id\": " INT64_FORMAT ", \"status\": ", id);
	escape_json(&payload, status);
	appendStringInfoString(&payload, ", \"video_url\": ");
	if (video_url != NULL)
		escape_json(&payload, video_url);
	else
		appendStringInfoString(&payload, "null");
	appendStringInfoString(&payload, ", \"error\": ");
	if (error != NULL)
		escape_json(&payload, pnstrdup(error, pg_mbcliplen(error, strlen(error),
														   KLING_NOTIFY_ERROR_CHARS)));
	else
		appendStringInfoString(&payload, "null");
	appendStringInfoChar(&payload, '}');

	Async_Notify("kling", payload.data);
	kling_announce_final_at_commit();
}
