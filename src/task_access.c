/*-------------------------------------------------------------------------
 *
 * task_access.c
 *		The SQL functions' reads and writes of kling_tasks: a role enqueues,
 *		reads, cancels and retries its own tasks, as the table's owner.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"

#include "plan_cache.h"
#include "sandbox.h"
#include "spend_limits.h"
#include "store.h"

typedef enum KlingAccessPlanId
{
	KLING_PLAN_INSERT,
	KLING_PLAN_FETCH,
	KLING_PLAN_CANCEL,
	KLING_PLAN_RETRY,
	KLING_PLAN_VIDEO,
	KLING_NUM_ACCESS_PLANS
} KlingAccessPlanId;

static KlingPlan kling_access_plans[KLING_NUM_ACCESS_PLANS] = {
	[KLING_PLAN_INSERT] = {
		"INSERT INTO %1$s (owner, prompt, opts, target_table, target_id_column, target_url_column,"
		" target_video_column)"
		" VALUES ($3::name, $1, $2, $4::regclass, $5::name, $6::name, $7::name) RETURNING id",
		7, {TEXTOID, JSONBOID, TEXTOID, OIDOID, TEXTOID, TEXTOID, TEXTOID}
	},
	[KLING_PLAN_FETCH] = {
		"SELECT * FROM %1$s WHERE id = $1 AND (owner = $2::name OR $3)",
		3, {INT8OID, TEXTOID, BOOLOID}
	},
	[KLING_PLAN_CANCEL] = {
		"UPDATE %1$s SET status = 'cancelled', completed_at = now(), updated_at = now(),"
		" next_attempt_at = now()"
		" WHERE id = $1 AND (owner = $2::name OR $3)"
		" AND status IN ('pending', 'submitting', 'queued', 'generating')",
		3, {INT8OID, TEXTOID, BOOLOID}
	},

	/*
	 * Only a failed task that provably never reached the provider: no
	 * generation id, and not failed with an unknown outcome.
	 */
	[KLING_PLAN_RETRY] = {
		"UPDATE %1$s SET status = 'pending', error = NULL, attempts = 0, completed_at = NULL,"
		" delivery_error = NULL, delivery_pending = false, next_attempt_at = now(), updated_at = now()"
		" WHERE id = $1 AND (owner = $2::name OR $3) AND status = 'failed'"
		" AND generation_id IS NULL AND error NOT LIKE 'outcome unknown%%'",
		3, {INT8OID, TEXTOID, BOOLOID}
	},

	/* Read as the table's owner, for the task's owner only. */
	[KLING_PLAN_VIDEO] = {
		"SELECT pg_catalog.lo_get(v.data) FROM %1$s t JOIN %2$s.kling_videos v ON v.task_id = t.id"
		" WHERE t.id = $1 AND (t.owner = $2::name OR $3)",
		3, {INT8OID, TEXTOID, BOOLOID}
	},
};

/*
 * Who called a SQL function.  The functions read and write the table as its
 * owner, so that no role needs (or gets) rights on it, and they filter by
 * the caller themselves: a role sees and cancels only its own tasks, a
 * superuser all.
 */
typedef struct KlingCaller
{
	Oid			userid;
	char	   *name;
	bool		superuser;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel; /* undoes the pinned search_path */
} KlingCaller;


/*
 * Connect SPI and act as the table's owner, remembering the caller.
 */
static void
kling_enter_as_owner(KlingCaller *caller)
{
	caller->userid = GetUserId();
	caller->name = GetUserNameFromId(caller->userid, false);
	caller->superuser = superuser_arg(caller->userid);

	/* The caller's search_path must not steer queries run as the owner. */
	caller->save_nestlevel = kling_pin_search_path();
	SPI_connect();
	if (!kling_table_refresh())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"kling\" is not installed in this database")));

	GetUserIdAndSecContext(&caller->save_userid, &caller->save_sec_context);
	SetUserIdAndSecContext(kling_table_owner(),
						   caller->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
}

/* Back to the caller's identity; an error on the way restores it too. */
static void
kling_leave(KlingCaller *caller)
{
	SetUserIdAndSecContext(caller->save_userid, caller->save_sec_context);
	SPI_finish();
	kling_unpin_settings(caller->save_nestlevel);
}


/*
 * Enqueue one task (prompt and options already checked) for the calling
 * role and return its id; target, if not NULL, is where the worker writes
 * the video URL back.
 */
int64
kling_store_insert(text *prompt, Jsonb *opts, const KlingTarget *target)
{
	KlingCaller caller;
	Datum		values[7];
	char		nulls[7] = {' ', ' ', ' ', 'n', 'n', 'n', 'n'};
	bool		isnull;
	int64		id;

	kling_enter_as_owner(&caller);
	kling_check_limits(caller.name);

	values[0] = PointerGetDatum(prompt);
	values[1] = JsonbPGetDatum(opts);
	values[2] = CStringGetTextDatum(caller.name);
	if (target != NULL)
	{
		values[3] = ObjectIdGetDatum(target->table);
		values[4] = CStringGetTextDatum(target->id_column);
		values[5] = CStringGetTextDatum(target->url_column);
		nulls[3] = nulls[4] = nulls[5] = ' ';
		if (target->video_column != NULL)
		{
			values[6] = CStringGetTextDatum(target->video_column);
			nulls[6] = ' ';
		}
	}
	kling_execute(&kling_access_plans[KLING_PLAN_INSERT], values, nulls, 0);
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									 1, &isnull));
	kling_leave(&caller);
	return id;
}

/*
 * The task's row as a composite datum in the caller's context, and its
 * status; an error if no such task is visible to the calling role.
 */
Datum
kling_store_fetch(int64 id, char **status)
{
	KlingCaller caller;
	Datum		values[3];
	Datum		row;
	MemoryContext outer = CurrentMemoryContext;
	MemoryContext spi;

	kling_enter_as_owner(&caller);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(caller.name);
	values[2] = BoolGetDatum(caller.superuser);
	kling_execute(&kling_access_plans[KLING_PLAN_FETCH], values, NULL, 1);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("kling task %lld does not exist", (long long) id),
				 errdetail("No task with this id is visible to the current role.")));

	spi = MemoryContextSwitchTo(outer);
	*status = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
						   SPI_fnumber(SPI_tuptable->tupdesc, "status"));
	MemoryContextSwitchTo(spi);
	row = PointerGetDatum(SPI_returntuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc));
	kling_leave(&caller);
	return row;
}

/*
 * Cancel a task of the calling role that is not final.  Returns whether it
 * changed anything, and if not, *status: the final state the task is in
 * already.  An error if no such task is visible.
 */
bool
kling_store_cancel(int64 id, char **status)
{
	KlingCaller caller;
	Datum		values[3];
	bool		changed;

	kling_enter_as_owner(&caller);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(caller.name);
	values[2] = BoolGetDatum(caller.superuser);
	kling_execute(&kling_access_plans[KLING_PLAN_CANCEL], values, NULL, 0);
	changed = (SPI_processed > 0);
	kling_leave(&caller);

	/* Tells "final already" from "no such task" (which is an error). */
	if (!changed)
		(void) kling_store_fetch(id, status);
	return changed;
}

/*
 * Send a failed task again, as a new attempt, if it provably never reached
 * the provider; otherwise an error that says why not.  The active limit
 * applies, as for a new task.
 */
void
kling_store_retry(int64 id)
{
	KlingCaller caller;
	Datum		values[3];
	bool		changed;
	char	   *status;
	Datum		row;
	HeapTupleHeader tuple;
	bool		isnull;
	char	   *error;

	kling_enter_as_owner(&caller);
	kling_check_active_limit(caller.name);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(caller.name);
	values[2] = BoolGetDatum(caller.superuser);
	kling_execute(&kling_access_plans[KLING_PLAN_RETRY], values, NULL, 0);
	changed = (SPI_processed > 0);
	kling_leave(&caller);
	if (changed)
		return;

	row = kling_store_fetch(id, &status);
	tuple = DatumGetHeapTupleHeader(row);
	if (strcmp(status, "failed") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("kling task %lld is %s, not failed", (long long) id, status),
				 errhint("Only a failed task can be retried.")));
	(void) GetAttributeByName(tuple, "generation_id", &isnull);
	if (!isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("kling task %lld reached the provider, which may have billed it", (long long) id),
				 errdetail("A retry would be a second video, billed again."),
				 errhint("Submit the prompt again if you want a new video.")));
	error = TextDatumGetCString(GetAttributeByName(tuple, "error", &isnull));
	Assert(!isnull);			/* a failed task always says why */
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("kling task %lld may have reached the provider", (long long) id),
			 errdetail("It failed with: %s", error),
			 errhint("A retry could be billed twice; submit the prompt again if you accept that.")));
}

/*
 * The bytes of a task's kept video, for its owner (or a superuser).  An
 * error if the task is not visible, or has no video kept in the database.
 */
bytea *
kling_store_video(int64 id)
{
	KlingCaller caller;
	Datum		values[3];
	Datum		video = (Datum) 0;
	bool		isnull = true;

	kling_enter_as_owner(&caller);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(caller.name);
	values[2] = BoolGetDatum(caller.superuser);
	kling_execute(&kling_access_plans[KLING_PLAN_VIDEO], values, NULL, 1);
	if (SPI_processed == 1)
		video = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
		video = SPI_datumTransfer(video, false, -1);
	kling_leave(&caller);

	if (isnull)
	{
		char	   *status;

		(void) kling_store_fetch(id, &status);	/* an error if not visible */
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("kling task %lld has no kept video", (long long) id),
				 errdetail("A video is kept when opts.keep (or kling.keep_videos) asks for it, once the task completed and the file was fetched, with kling.storage = database."),
				 errhint("See keep_state and delivery_error in its kling_tasks row.")));
	}
	return DatumGetByteaPP(video);
}
