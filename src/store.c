/*-------------------------------------------------------------------------
 *
 * store.c
 *		The task store: every read and write of kling_tasks.
 *
 * All SQL lives here, run through SPI with parameters and with plans kept
 * across calls.  The table is found in the extension's own schema; the
 * plans are made again if the extension is dropped and created anew.
 *
 * The worker's calls run inside one transaction per round (begin_round,
 * then any number of reads and writes, then end_round); what they return is
 * allocated in the memory context that was current at begin_round.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "pgtime.h"

#include "settings.h"
#include "sandbox.h"
#include "store.h"

typedef enum KlingPlanId
{
	KLING_PLAN_INSERT,
	KLING_PLAN_FETCH,
	KLING_PLAN_CANCEL,
	KLING_PLAN_RETRY,
	KLING_PLAN_COUNT_ACTIVE,
	KLING_PLAN_COUNT_TODAY,
	KLING_PLAN_FAIL_INTERRUPTED,
	KLING_PLAN_POLL_NOW,
	KLING_PLAN_EXPIRE,
	KLING_PLAN_APPLY,
	KLING_PLAN_NOTE_CANCELLED,
	KLING_PLAN_COUNT_IN_FLIGHT,
	KLING_PLAN_CLAIM_CREATES,
	KLING_PLAN_CLAIM_POLLS,
	KLING_PLAN_MARK_DELIVERIES,
	KLING_PLAN_CLAIM_DELIVERIES,
	KLING_PLAN_FINISH_DELIVERY,
	KLING_PLAN_DELETE_EXPIRED,
	KLING_PLAN_GENERATION_TIMES,
	KLING_PLAN_NEXT_POLL,
	KLING_PLAN_NEXT_SEND,
	KLING_NUM_PLANS
} KlingPlanId;

typedef struct KlingPlanDef
{
	const char *sql;			/* %1$s stands for the qualified table name */
	int			nargs;
	Oid			argtypes[10];
} KlingPlanDef;

static const KlingPlanDef kling_plan_defs[KLING_NUM_PLANS] = {
	[KLING_PLAN_INSERT] = {
		"INSERT INTO %1$s (owner, prompt, opts, target_table, target_id_column, target_url_column)"
		" VALUES ($3::name, $1, $2, $4::regclass, $5::name, $6::name) RETURNING id",
		6, {TEXTOID, JSONBOID, TEXTOID, OIDOID, TEXTOID, TEXTOID}
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
	 * A task cancelled after it reached the provider is still being made
	 * (and billed) there: it counts until kling.task_timeout after sending.
	 */
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
	[KLING_PLAN_COUNT_ACTIVE] = {
		"SELECT count(*)::int4 FROM ("
		" (SELECT 1 FROM %1$s WHERE owner = $1::name"
		"  AND status IN ('pending', 'submitting', 'queued', 'generating') LIMIT $2)"
		" UNION ALL"
		" (SELECT 1 FROM %1$s WHERE owner = $1::name AND status = 'cancelled'"
		"  AND submitted_at > now() - $3 * interval '1 millisecond' LIMIT $2)) s",
		3, {TEXTOID, INT4OID, INT4OID}
	},
	/* The day is the server's (or kling.time_zone's), never the caller's. */
	[KLING_PLAN_COUNT_TODAY] = {
		"SELECT count(*)::int4 FROM (SELECT FROM %1$s WHERE owner = $1::name"
		" AND created_at >= date_trunc('day', now(), $3) LIMIT $2) s",
		3, {TEXTOID, INT4OID, TEXTOID}
	},

	/*
	 * Every write of the worker skips rows a user's open transaction holds
	 * (an uncommitted kling_cancel), so that the worker never waits on it.
	 * Recovery also tells which of the given tasks (NULL: all) it could
	 * not take yet.
	 */
	[KLING_PLAN_FAIL_INTERRUPTED] = {
		"WITH candidates AS (SELECT id FROM %1$s WHERE status = 'submitting'"
		"                    AND ($1 IS NULL OR id = ANY ($1))),"
		" failed AS (UPDATE %1$s SET status = 'failed', completed_at = now(), updated_at = now(),"
		"   next_attempt_at = now(),"
		"   error = 'outcome unknown: the server stopped while this task was being sent;"
		"   it was not sent again, to avoid paying twice'"
		"   WHERE id IN (SELECT id FROM %1$s WHERE id IN (SELECT id FROM candidates)"
		"                AND status = 'submitting' FOR UPDATE SKIP LOCKED)"
		"   RETURNING id)"
		" SELECT id, true FROM failed"
		" UNION ALL SELECT id, false FROM candidates WHERE id NOT IN (SELECT id FROM failed)",
		1, {INT8ARRAYOID}
	},
	[KLING_PLAN_POLL_NOW] = {
		"UPDATE %1$s SET next_attempt_at = now()"
		" WHERE id IN (SELECT id FROM %1$s WHERE status IN ('queued', 'generating')"
		"              AND next_attempt_at > now() FOR UPDATE SKIP LOCKED)",
		0, {0}
	},
	[KLING_PLAN_EXPIRE] = {
		"UPDATE %1$s SET status = 'failed', completed_at = now(), updated_at = now(),"
		" next_attempt_at = now(),"
		" error = format('not finished by the provider within kling.task_timeout (%%s)',"
		"                $1 * interval '1 millisecond')"
		" WHERE id IN (SELECT id FROM %1$s WHERE status IN ('queued', 'generating')"
		"              AND submitted_at < now() - $1 * interval '1 millisecond'"
		"              FOR UPDATE SKIP LOCKED)"
		" RETURNING id",
		1, {INT4OID}
	},

	/*
	 * Returns (n, true) for each result written and (n, false) for each
	 * whose task a user's open transaction holds (written in a later
	 * round); a task that left the expected state is neither.
	 */
	[KLING_PLAN_APPLY] = {
		"WITH u AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) WITH ORDINALITY"
		"      AS u(id, status, generation_id, video_url, result, error, attempts, next_ms,"
		"           from_create, n)),"
		" free AS (SELECT id FROM %1$s WHERE id IN (SELECT id FROM u) FOR UPDATE SKIP LOCKED),"
		" written AS (UPDATE %1$s t SET status = coalesce(u.status, t.status),"
		" generation_id = coalesce(u.generation_id, t.generation_id),"
		" video_url = coalesce(u.video_url, t.video_url),"
		" result = coalesce(u.result, t.result),"
		" error = u.error,"
		" attempts = u.attempts,"
		" next_attempt_at = CASE WHEN u.status IN ('completed', 'failed', 'cancelled') THEN now()"
		"                   ELSE now() + u.next_ms * interval '1 millisecond' END,"
		" submitted_at = CASE WHEN t.status = 'submitting' AND u.status IN ('queued', 'generating')"
		"                THEN now() ELSE t.submitted_at END,"
		" completed_at = CASE WHEN u.status IN ('completed', 'failed', 'cancelled')"
		"                THEN now() END,"
		" updated_at = now()"
		" FROM u WHERE t.id = u.id AND t.id IN (SELECT id FROM free)"
		" AND CASE WHEN u.from_create THEN t.status = 'submitting'"
		"     ELSE t.status IN ('queued', 'generating') END"
		" RETURNING u.n)"
		" SELECT n, true FROM written"
		" UNION ALL SELECT n, false FROM u WHERE id NOT IN (SELECT id FROM free)",
		9, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
			TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, BOOLARRAYOID}
	},
	[KLING_PLAN_NOTE_CANCELLED] = {
		"UPDATE %1$s SET generation_id = $2, result = $3, submitted_at = now(), updated_at = now()"
		" WHERE id = $1 AND status = 'cancelled' AND generation_id IS NULL",
		3, {INT8OID, TEXTOID, JSONBOID}
	},
	[KLING_PLAN_COUNT_IN_FLIGHT] = {
		"SELECT ((SELECT count(*) FROM %1$s WHERE status IN ('queued', 'generating'))"
		" + (SELECT count(*) FROM %1$s WHERE status = 'submitting'))::int4",
		0, {0}
	},
	[KLING_PLAN_CLAIM_CREATES] = {
		"UPDATE %1$s t SET status = 'submitting', updated_at = now()"
		" FROM (SELECT id FROM %1$s WHERE status = 'pending' AND next_attempt_at <= now()"
		"       ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) c"
		" WHERE t.id = c.id RETURNING t.id, t.prompt, t.opts, t.attempts",
		1, {INT4OID}
	},
	[KLING_PLAN_CLAIM_POLLS] = {
		"SELECT id, generation_id, attempts, opts FROM %1$s"
		" WHERE status IN ('queued', 'generating') AND next_attempt_at <= now()"
		" AND id <> ALL ($2)"
		" ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED",
		2, {INT4OID, INT8ARRAYOID}
	},
	/*
	 * Of the tasks a round made final, mark those with something to deliver
	 * (a write-back of a completed task, a callback) for the delivery
	 * process; returns every task with its status and whether it was marked.
	 */
	[KLING_PLAN_MARK_DELIVERIES] = {
		"WITH marked AS (UPDATE %1$s SET delivery_pending = true WHERE id = ANY ($1)"
		"   AND ((target_table IS NOT NULL AND status = 'completed') OR opts ? 'callback')"
		"   RETURNING id)"
		" SELECT t.id, t.status, t.id IN (SELECT id FROM marked) FROM %1$s t WHERE t.id = ANY ($1)",
		1, {INT8ARRAYOID}
	},
	[KLING_PLAN_CLAIM_DELIVERIES] = {
		"SELECT t.id, t.owner, t.status, t.video_url, t.error, t.target_table::oid,"
		" t.target_id_column, t.target_url_column, t.opts ->> 'callback', t"
		" FROM %1$s t WHERE t.delivery_pending ORDER BY t.id LIMIT $1 FOR UPDATE SKIP LOCKED",
		1, {INT4OID}
	},
	[KLING_PLAN_FINISH_DELIVERY] = {
		"UPDATE %1$s SET delivery_pending = false, delivery_error = $2, updated_at = now()"
		" WHERE id = $1",
		2, {INT8OID, TEXTOID}
	},
	[KLING_PLAN_DELETE_EXPIRED] = {
		"DELETE FROM %1$s WHERE id IN (SELECT id FROM %1$s"
		" WHERE status IN ('completed', 'failed', 'cancelled')"
		" AND completed_at < now() - $1 * interval '1 second' LIMIT $2"
		" FOR UPDATE SKIP LOCKED)",
		2, {INT4OID, INT4OID}
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
	[KLING_PLAN_NEXT_POLL] = {
		"SELECT next_attempt_at FROM %1$s WHERE status IN ('queued', 'generating')"
		" AND id <> ALL ($1)"
		" ORDER BY next_attempt_at LIMIT 1",
		1, {INT8ARRAYOID}
	},
	[KLING_PLAN_NEXT_SEND] = {
		"SELECT next_attempt_at FROM %1$s WHERE status = 'pending'"
		" ORDER BY next_attempt_at LIMIT 1",
		0, {0}
	},
};

static SPIPlanPtr kling_plans[KLING_NUM_PLANS];
static Oid	kling_plans_extension = InvalidOid;
static char kling_table_name[2 * NAMEDATALEN + 16];
static Oid	kling_table_owner = InvalidOid;
static Oid	kling_table_oid = InvalidOid;
static bool kling_table_known = false;
static bool kling_callback_registered = false;

/* Tasks the current worker round made final, to deliver and announce. */
static List *kling_finalized = NIL;

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

/* Where the worker's results go: the context current at begin_round. */
static MemoryContext kling_round_context = NULL;
static int	kling_round_nestlevel = 0;

static bool kling_store_refresh_plans(void);
static void kling_relcache_invalidated(Datum arg, Oid relid);
static SPIPlanPtr kling_plan(KlingPlanId id);
static int	kling_execute(KlingPlanId id, Datum *values, const char *nulls,
						  long limit);
static List *kling_collect_claims(bool creates);
static void kling_note_finalized(int64 id);
static void kling_note_finalized_rows(void);
static char *kling_result_text(uint64 row, int column);
static bool kling_first_timestamp(KlingPlanId id, Datum *args, TimestampTz *value);
static const char *kling_day_time_zone(void);
static void kling_check_active_limit(KlingCaller *caller);

/*
 * Make sure the kept plans belong to the installed extension, and know
 * its table and the table's owner.  Returns false if the extension is not
 * installed in this database.  Runs inside SPI.
 */
static bool
kling_store_refresh_plans(void)
{
	Oid			ext;
	Datum		arg;
	bool		isnull;

	/* Known good until the table's relcache entry is invalidated. */
	if (kling_table_known)
		return true;
	if (!kling_callback_registered)
	{
		CacheRegisterRelcacheCallback(kling_relcache_invalidated, (Datum) 0);
		kling_callback_registered = true;
	}

	ext = get_extension_oid("kling", true);
	arg = ObjectIdGetDatum(ext);
	if (ext == kling_plans_extension && OidIsValid(ext))
	{
		kling_table_known = true;
		return true;
	}

	for (int i = 0; i < KLING_NUM_PLANS; i++)
	{
		if (kling_plans[i] != NULL)
			SPI_freeplan(kling_plans[i]);
		kling_plans[i] = NULL;
	}
	kling_plans_extension = InvalidOid;
	if (!OidIsValid(ext))
		return false;

	if (SPI_execute_with_args("SELECT pg_catalog.quote_ident(n.nspname) || '.kling_tasks',"
							  " c.relowner, c.oid"
							  " FROM pg_catalog.pg_extension e"
							  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
							  " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid"
							  "  AND c.relname = 'kling_tasks'"
							  " WHERE e.oid = $1",
							  1, (Oid[]) {OIDOID}, &arg, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not find the table of extension \"kling\"");

	snprintf(kling_table_name, sizeof(kling_table_name), "%s",
			 TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull)));
	kling_table_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 2, &isnull));
	kling_table_oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 3, &isnull));
	kling_plans_extension = ext;
	kling_table_known = true;
	return true;
}

/*
 * The table changed or went away (DROP EXTENSION): look the extension up
 * again before the next statement.
 */
static void
kling_relcache_invalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == kling_table_oid)
		kling_table_known = false;
}

/* The kept plan for a statement, prepared on first use. */
static SPIPlanPtr
kling_plan(KlingPlanId id)
{
	if (!kling_store_refresh_plans())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"kling\" is not installed in this database")));

	if (kling_plans[id] == NULL)
	{
		const KlingPlanDef *def = &kling_plan_defs[id];
		SPIPlanPtr	plan;

		plan = SPI_prepare(psprintf(def->sql, kling_table_name), def->nargs,
						   (Oid *) def->argtypes);
		if (plan == NULL)
			elog(ERROR, "could not prepare kling statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(plan);
		kling_plans[id] = plan;
	}
	return kling_plans[id];
}

/*
 * Run a kept plan; returns the SPI result code.  Never read-only: each
 * statement takes a new snapshot and so sees the round's earlier writes.
 */
static int
kling_execute(KlingPlanId id, Datum *values, const char *nulls, long limit)
{
	int			rc = SPI_execute_plan(kling_plan(id), values, nulls, false, limit);

	if (rc < 0)
		elog(ERROR, "kling statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

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
	if (!kling_store_refresh_plans())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"kling\" is not installed in this database")));

	GetUserIdAndSecContext(&caller->save_userid, &caller->save_sec_context);
	SetUserIdAndSecContext(kling_table_owner,
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
 * How many rows a counting plan finds for the caller, up to limit; the
 * third parameter is the plan's own.
 */
static int
kling_count_for(KlingPlanId id, KlingCaller *caller, int limit, Datum third)
{
	Datum		values[3] = {CStringGetTextDatum(caller->name), Int32GetDatum(limit), third};
	bool		isnull;

	kling_execute(id, values, NULL, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* The zone of the daily limit: kling.time_zone, else the server's log_timezone. */
static const char *
kling_day_time_zone(void)
{
	if (kling_time_zone != NULL && kling_time_zone[0] != '\0')
		return kling_time_zone;
	return pg_get_timezone_name(log_timezone);
}

/*
 * Refuse a task over the caller's spend limits.  Rows this statement
 * already added count, so a bulk insert that goes over fails whole.
 */
static void
kling_check_limits(KlingCaller *caller)
{
	int			n;

	kling_check_active_limit(caller);
	if (kling_max_daily_tasks > 0 &&
		(n = kling_count_for(KLING_PLAN_COUNT_TODAY, caller, kling_max_daily_tasks,
							 CStringGetTextDatum(kling_day_time_zone()))) >= kling_max_daily_tasks)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" has submitted %d kling tasks today, counting those this transaction submitted",
						caller->name, n),
				 errdetail("kling.max_daily_tasks allows %d tasks per role and day; the day is that of time zone \"%s\".",
						   kling_max_daily_tasks, kling_day_time_zone()),
				 errhint("Submit again tomorrow, or ask an administrator to raise kling.max_daily_tasks.")));
}

/* Refuse a task over the caller's active limit (kling.max_active_tasks). */
static void
kling_check_active_limit(KlingCaller *caller)
{
	int			n;

	if (kling_max_active_tasks > 0 &&
		(n = kling_count_for(KLING_PLAN_COUNT_ACTIVE, caller, kling_max_active_tasks,
							 Int32GetDatum(kling_task_timeout_ms))) >= kling_max_active_tasks)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" already has %d kling tasks that are not final, counting those this transaction submitted",
						caller->name, n),
				 errdetail("kling.max_active_tasks allows %d tasks waiting or running per role; tasks cancelled after they reached the provider count until kling.task_timeout after they were sent.",
						   kling_max_active_tasks),
				 errhint("Wait for tasks to finish, or ask an administrator to raise kling.max_active_tasks.")));
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
	Datum		values[6];
	char		nulls[6] = {' ', ' ', ' ', 'n', 'n', 'n'};
	bool		isnull;
	int64		id;

	kling_enter_as_owner(&caller);
	kling_check_limits(&caller);

	values[0] = PointerGetDatum(prompt);
	values[1] = JsonbPGetDatum(opts);
	values[2] = CStringGetTextDatum(caller.name);
	if (target != NULL)
	{
		values[3] = ObjectIdGetDatum(target->table);
		values[4] = CStringGetTextDatum(target->id_column);
		values[5] = CStringGetTextDatum(target->url_column);
		nulls[3] = nulls[4] = nulls[5] = ' ';
	}
	kling_execute(KLING_PLAN_INSERT, values, nulls, 0);
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
	kling_execute(KLING_PLAN_FETCH, values, NULL, 1);
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
	kling_execute(KLING_PLAN_CANCEL, values, NULL, 0);
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
	kling_check_active_limit(&caller);
	values[0] = Int64GetDatum(id);
	values[1] = CStringGetTextDatum(caller.name);
	values[2] = BoolGetDatum(caller.superuser);
	kling_execute(KLING_PLAN_RETRY, values, NULL, 0);
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
 * Begin a worker round: a transaction, SPI, a snapshot.  Returns false if
 * the extension is not installed; end_round must be called either way.
 */
bool
kling_store_begin_round(void)
{
	kling_round_context = CurrentMemoryContext;
	kling_finalized = NIL;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	kling_round_nestlevel = kling_pin_search_path();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	return kling_store_refresh_plans();
}

/* Commit the worker round. */
void
kling_store_end_round(void)
{
	SPI_finish();
	kling_unpin_settings(kling_round_nestlevel);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(kling_round_context);
}

/* Remember a task this round made final. */
static void
kling_note_finalized(int64 id)
{
	MemoryContext spi = MemoryContextSwitchTo(kling_round_context);
	int64	   *copy = palloc(sizeof(int64));

	*copy = id;
	kling_finalized = lappend(kling_finalized, copy);
	MemoryContextSwitchTo(spi);
}

/* Remember the ids a statement's RETURNING id gave. */
static void
kling_note_finalized_rows(void)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		kling_note_finalized(DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull)));
	}
}

/* The tasks this round made final so far (pointers to int64). */
List *
kling_store_finalized(void)
{
	return kling_finalized;
}

/* A text column of a row of the last result, copied to the round context, or NULL. */
static char *
kling_result_text(uint64 row, int column)
{
	MemoryContext spi = MemoryContextSwitchTo(kling_round_context);
	char	   *value = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column);

	MemoryContextSwitchTo(spi);
	return value;
}

/*
 * Announce-and-mark step of a round: of the given final tasks (a list of
 * pointers to int64), mark for the delivery process those with something
 * to deliver.  Returns a KlingFinal for every one that still exists.
 */
List *
kling_store_mark_deliveries(List *ids)
{
	int64	   *id_values = palloc(Max(list_length(ids), 1) * sizeof(int64));
	Datum		values[1];
	List	   *finals = NIL;
	ListCell   *lc;

	foreach(lc, ids)
		id_values[foreach_current_index(lc)] = *(int64 *) lfirst(lc);
	values[0] = kling_store_id_array(id_values, list_length(ids));
	kling_execute(KLING_PLAN_MARK_DELIVERIES, values, NULL, 0);

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

	kling_execute(KLING_PLAN_CLAIM_DELIVERIES, values, NULL, 0);
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

		spi = MemoryContextSwitchTo(kling_round_context);
		d->row = PointerGetDatum(PG_DETOAST_DATUM_COPY(SPI_getbinval(tuple, desc, 10, &isnull)));
		deliveries = lappend(deliveries, d);
		MemoryContextSwitchTo(spi);
	}
	return deliveries;
}

/* Delete up to limit final tasks older than retention_s; returns how many. */
int
kling_store_delete_expired(int retention_s, int limit)
{
	Datum		values[2] = {Int32GetDatum(retention_s), Int32GetDatum(limit)};

	kling_execute(KLING_PLAN_DELETE_EXPIRED, values, NULL, 0);
	return (int) SPI_processed;
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

	kling_execute(KLING_PLAN_GENERATION_TIMES, NULL, NULL, 0);
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

/*
 * Why a kling.* setting in the configuration files could not be applied,
 * as a hold reason in the given context, or NULL if all could.  The server
 * logs such a value once and keeps the old one (or the default); this
 * makes the worker hold instead of sending with it.
 */
char *
kling_store_config_error(MemoryContext context)
{
	char	   *error = NULL;

	if (SPI_execute("SELECT name, sourcefile, sourceline, error"
					" FROM pg_catalog.pg_show_all_file_settings()"
					" WHERE name OPERATOR(pg_catalog.~~) 'kling.%' AND error IS NOT NULL"
					" ORDER BY seqno DESC LIMIT 1", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_file_settings");
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HeapTuple	tuple = SPI_tuptable->vals[0];

		error = MemoryContextStrdup(context,
									psprintf("%s is not valid: %s line %s (%s); nothing is sent until it is fixed and the configuration reloaded",
											 SPI_getvalue(tuple, desc, 1),
											 SPI_getvalue(tuple, desc, 2),
											 SPI_getvalue(tuple, desc, 3),
											 SPI_getvalue(tuple, desc, 4)));
	}
	return error;
}

/* A task's delivery is done; error says what went wrong, or is NULL. */
void
kling_store_finish_delivery(int64 id, const char *error)
{
	Datum		values[2] = {Int64GetDatum(id), error ? CStringGetTextDatum(error) : (Datum) 0};
	char		nulls[2] = {' ', error ? ' ' : 'n'};

	kling_execute(KLING_PLAN_FINISH_DELIVERY, values, nulls, 0);
}

/*
 * Take over from a worker that stopped, when a worker starts serving.
 * Tasks it left in 'submitting' may or may not have reached the provider, so
 * they fail rather than risk a second bill; returns how many.  Tasks at the
 * provider are polled at once, since polls it had under way were lost.
 *
 * *held gets the tasks a user's open transaction holds (as an int8[], or
 * (Datum) 0 if none): call again with only = that array in a later round
 * to finish; only = (Datum) 0 takes every task left 'submitting'.
 */
int
kling_store_recover(Datum only, Datum *held)
{
	Datum		values[1] = {only};
	char		nulls[1] = {only == (Datum) 0 ? 'n' : ' '};
	int64	   *held_ids;
	int			nheld = 0;
	int			interrupted = 0;

	kling_execute(KLING_PLAN_FAIL_INTERRUPTED, values, nulls, 0);
	held_ids = palloc(Max(SPI_processed, 1) * sizeof(int64));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
		{
			kling_note_finalized(id);
			interrupted++;
		}
		else
			held_ids[nheld++] = id;
	}
	if (nheld > 0)
	{
		MemoryContext spi = MemoryContextSwitchTo(kling_round_context);

		*held = kling_store_id_array(held_ids, nheld);
		MemoryContextSwitchTo(spi);
	}
	else
		*held = (Datum) 0;
	if (only == (Datum) 0)
		kling_execute(KLING_PLAN_POLL_NOW, NULL, NULL, 0);
	return interrupted;
}

/* Fail the tasks the provider has held longer than the task timeout. */
int
kling_store_expire(int task_timeout_ms)
{
	Datum		values[1] = {Int32GetDatum(task_timeout_ms)};

	kling_execute(KLING_PLAN_EXPIRE, values, NULL, 0);
	kling_note_finalized_rows();
	return (int) SPI_processed;
}

/* A one-dimensional array of n values of the given type, for a plan's parameter. */
static Datum
kling_array(Datum *values, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbound = 1;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, &n, &lbound,
											  type, typlen, typbyval, typalign));
}

/* A text value, or a null when NULL. */
static Datum
kling_text_or_null(const char *value, bool *isnull)
{
	*isnull = (value == NULL);
	return value ? CStringGetTextDatum(value) : (Datum) 0;
}

/*
 * Write the round's results, all in one statement.  A task that left the
 * expected state meanwhile (it was cancelled) is not changed, but still
 * records the generation id its create got, for the history.  A task that a
 * user's open transaction holds is not waited for: its update is marked
 * held, for the caller to write in a later round.
 */
void
kling_store_apply_all(KlingTaskUpdate *updates, int n)
{
	enum
	{
		ID, STATUS, GENERATION_ID, VIDEO_URL, RESULT, ERROR_TEXT, ATTEMPTS, NEXT_MS,
		FROM_CREATE, NCOLUMNS
	};
	static const Oid types[NCOLUMNS] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID,
	TEXTOID, INT4OID, INT4OID, BOOLOID};
	Datum	   *values[NCOLUMNS];
	bool	   *nulls[NCOLUMNS];
	Datum		params[NCOLUMNS];
	bool	   *applied;

	if (n == 0)
		return;

	for (int i = 0; i < n; i++)
		updates[i].held = false;
	for (int c = 0; c < NCOLUMNS; c++)
	{
		values[c] = palloc(n * sizeof(Datum));
		nulls[c] = palloc0(n * sizeof(bool));
	}
	for (int i = 0; i < n; i++)
	{
		const KlingTaskUpdate *u = &updates[i];

		values[ID][i] = Int64GetDatum(u->id);
		values[STATUS][i] = kling_text_or_null(u->status, &nulls[STATUS][i]);
		values[GENERATION_ID][i] = kling_text_or_null(u->generation_id, &nulls[GENERATION_ID][i]);
		values[VIDEO_URL][i] = kling_text_or_null(u->video_url, &nulls[VIDEO_URL][i]);
		nulls[RESULT][i] = (u->result == NULL);
		values[RESULT][i] = JsonbPGetDatum(u->result);
		values[ERROR_TEXT][i] = kling_text_or_null(u->error, &nulls[ERROR_TEXT][i]);
		values[ATTEMPTS][i] = Int32GetDatum(u->attempts);
		values[NEXT_MS][i] = Int32GetDatum(u->next_attempt_ms);
		values[FROM_CREATE][i] = BoolGetDatum(u->expect == KLING_EXPECT_SUBMITTING);
	}
	for (int c = 0; c < NCOLUMNS; c++)
		params[c] = kling_array(values[c], nulls[c], n, types[c]);

	kling_execute(KLING_PLAN_APPLY, params, NULL, 0);

	applied = palloc0(n * sizeof(bool));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		i = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
													SPI_tuptable->tupdesc, 1, &isnull));

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull)))
			applied[i - 1] = true;
		else
			updates[i - 1].held = true;
	}

	for (int i = 0; i < n; i++)
	{
		const KlingTaskUpdate *u = &updates[i];

		if (u->held)
			continue;
		if (applied[i])
		{
			if (u->status != NULL &&
				(strcmp(u->status, "completed") == 0 || strcmp(u->status, "failed") == 0))
				kling_note_finalized(u->id);
		}
		else if (u->expect == KLING_EXPECT_SUBMITTING && u->generation_id != NULL)
		{
			Datum		note[3];
			char		note_nulls[3] = {' ', ' ', u->result ? ' ' : 'n'};

			note[0] = Int64GetDatum(u->id);
			note[1] = CStringGetTextDatum(u->generation_id);
			note[2] = u->result ? JsonbPGetDatum(u->result) : (Datum) 0;
			kling_execute(KLING_PLAN_NOTE_CANCELLED, note, note_nulls, 0);
		}
	}
}

/* Tasks that count against kling.max_in_flight. */
int
kling_store_count_in_flight(void)
{
	bool		isnull;

	kling_execute(KLING_PLAN_COUNT_IN_FLIGHT, NULL, NULL, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* Copy claimed rows out of SPI into the round's context. */
static List *
kling_collect_claims(bool creates)
{
	MemoryContext spi = MemoryContextSwitchTo(kling_round_context);
	List	   *claims = NIL;
	TupleDesc	desc = SPI_tuptable->tupdesc;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		KlingClaim *claim = palloc0(sizeof(KlingClaim));
		bool		isnull;

		claim->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		if (creates)
		{
			claim->prompt = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
			claim->opts = DatumGetJsonbPCopy(SPI_getbinval(tuple, desc, 3, &isnull));
			claim->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		}
		else
		{
			claim->generation_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
			claim->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
			claim->opts = DatumGetJsonbPCopy(SPI_getbinval(tuple, desc, 4, &isnull));
		}
		claims = lappend(claims, claim);
	}
	MemoryContextSwitchTo(spi);
	return claims;
}

/*
 * Claim up to limit pending tasks to send, oldest first, marking them
 * 'submitting'.  The mark commits before any request goes out.
 */
List *
kling_store_claim_creates(int limit)
{
	Datum		values[1] = {Int32GetDatum(limit)};

	kling_execute(KLING_PLAN_CLAIM_CREATES, values, NULL, 0);
	return kling_collect_claims(true);
}

/*
 * Claim up to limit tasks whose poll is due, leaving out those whose poll
 * is under way (polling, an int8[]): they stay due in the table until their
 * answer is written, and no new row version is written to claim them.  Rows
 * a user's open transaction holds (an uncommitted kling_cancel) are skipped,
 * so that writing the answer never waits for that transaction.  A poll lost
 * to a crash is simply made again by the next worker.
 */
List *
kling_store_claim_polls(int limit, Datum polling)
{
	Datum		values[2] = {Int32GetDatum(limit), polling};

	kling_execute(KLING_PLAN_CLAIM_POLLS, values, NULL, 0);
	return kling_collect_claims(false);
}

/* The first value of a one-column, at-most-one-row plan, if any. */
static bool
kling_first_timestamp(KlingPlanId id, Datum *args, TimestampTz *value)
{
	bool		isnull = true;

	kling_execute(id, args, NULL, 1);
	if (SPI_processed > 0)
		*value = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
	return !isnull;
}

/*
 * When the next poll (and, if include_pending, the next send) is due, not
 * counting the polls under way.  Returns false if nothing is waiting.  Each
 * look reads one index entry past those under way.
 */
bool
kling_store_next_due(bool include_pending, Datum polling, TimestampTz *due)
{
	TimestampTz send = 0;
	bool		found = kling_first_timestamp(KLING_PLAN_NEXT_POLL, &polling, due);

	if (include_pending && kling_first_timestamp(KLING_PLAN_NEXT_SEND, NULL, &send) &&
		(!found || send < *due))
	{
		*due = send;
		found = true;
	}
	return found;
}

/* Whether any task waits to be sent, due or not. */
bool
kling_store_pending_exists(void)
{
	TimestampTz unused;

	return kling_first_timestamp(KLING_PLAN_NEXT_SEND, NULL, &unused);
}

/* An int8[] of the given ids, for the polling argument above. */
Datum
kling_store_id_array(const int64 *ids, int n)
{
	Datum	   *values = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		values[i] = Int64GetDatum(ids[i]);
	return kling_array(values, NULL, n, INT8OID);
}
