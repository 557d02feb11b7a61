/*-------------------------------------------------------------------------
 *
 * sql_api.c
 *		The SQL-callable functions: kling_submit, kling_status, kling_cancel,
 *		kling_wait.
 *
 * None of them does network I/O: they read and write kling_tasks in the
 * caller's transaction, and the worker is woken when that commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "options.h"
#include "protocol.h"
#include "delivery.h"
#include "shmem.h"
#include "sql_api.h"
#include "store.h"

/*
 * kling_wait sleeps until a task becomes final, looking again at least this
 * often in case a wake-up was missed (e.g. a task finalized by a plain
 * UPDATE).
 */
#define KLING_WAIT_STEP_MS 1000

/*
 * The tasks this backend enqueued in its current transaction, so that
 * kling_wait can refuse to wait for one (it is sent only after commit).
 * Stale once the transaction id differs.
 */
static TransactionId kling_enqueued_xid = InvalidTransactionId;
static int64 *kling_enqueued_ids = NULL;
static int	kling_nenqueued = 0;
static int	kling_enqueued_cap = 0;

PG_FUNCTION_INFO_V1(kling_submit);
PG_FUNCTION_INFO_V1(kling_status);
PG_FUNCTION_INFO_V1(kling_cancel);
PG_FUNCTION_INFO_V1(kling_retry);
PG_FUNCTION_INFO_V1(kling_wait);
PG_FUNCTION_INFO_V1(kling_video);

static bool kling_status_is_final(const char *status);
static int64 kling_task_id_arg(FunctionCallInfo fcinfo);
static void kling_note_enqueued(int64 id);
static bool kling_enqueued_here(int64 id);
static int64 kling_interval_ms(Interval *interval);

/* The task id argument of a function; a NULL id is an error, not a NULL row. */
static int64
kling_task_id_arg(FunctionCallInfo fcinfo)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("task id must not be null")));
	return PG_GETARG_INT64(0);
}

/* Whether a status is one a task never leaves. */
static bool
kling_status_is_final(const char *status)
{
	return strcmp(status, "completed") == 0 ||
		strcmp(status, "failed") == 0 ||
		strcmp(status, "cancelled") == 0;
}

/*
 * Check a prompt and options (NULL: none), enqueue a task, and have the
 * worker woken at commit.  Shared by kling_submit and kling_on_insert.
 */
int64
kling_enqueue(text *prompt, Jsonb *opts, const KlingTarget *target)
{
	int64		id;

	if (opts == NULL)
		opts = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	opts = kling_normalize_request(prompt, opts);
	/* The body goes out as UTF-8: refuse now what could not be sent. */
	if (GetDatabaseEncoding() != PG_UTF8)
		(void) kling_create_body(text_to_cstring(prompt), opts);

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot submit a kling task on a server in recovery"),
				 errhint("Submit tasks on the primary server.")));

	id = kling_store_insert(prompt, opts, target);
	kling_wake_worker_at_commit();
	kling_note_enqueued(id);
	kling_warn_if_not_served();
	return id;
}

/*
 * Tasks of a database the worker does not serve stay pending: say so, once
 * per session, rather than let them wait in silence.
 */
void
kling_warn_if_not_served(void)
{
	static bool checked = false;
	char	   *database;

	if (checked)
		return;
	checked = true;
	database = get_database_name(MyDatabaseId);
	if (database != NULL && !kling_database_allowed(database))
		ereport(WARNING,
				(errmsg("the kling workers do not serve database \"%s\"", database),
				 errdetail("kling.databases (or kling.database_name) leaves it out: tasks submitted here stay pending."),
				 errhint("Add \"%s\" to kling.databases in postgresql.conf and reload the server.",
						 database)));
}

/* Remember a task enqueued by the current transaction. */
static void
kling_note_enqueued(int64 id)
{
	TransactionId xid = GetTopTransactionId();

	if (xid != kling_enqueued_xid)
	{
		kling_enqueued_xid = xid;
		kling_nenqueued = 0;
	}
	if (kling_nenqueued == kling_enqueued_cap)
	{
		kling_enqueued_cap = Max(16, kling_enqueued_cap * 2);
		kling_enqueued_ids = kling_enqueued_ids == NULL
			? MemoryContextAlloc(TopMemoryContext, kling_enqueued_cap * sizeof(int64))
			: repalloc(kling_enqueued_ids, kling_enqueued_cap * sizeof(int64));
	}
	kling_enqueued_ids[kling_nenqueued++] = id;
}

/* Whether the current transaction enqueued the task. */
static bool
kling_enqueued_here(int64 id)
{
	if (kling_enqueued_xid != GetTopTransactionIdIfAny() ||
		!TransactionIdIsValid(kling_enqueued_xid))
		return false;
	for (int i = 0; i < kling_nenqueued; i++)
		if (kling_enqueued_ids[i] == id)
			return true;
	return false;
}

/*
 * kling_submit(prompt text, opts jsonb DEFAULT '{}') RETURNS bigint
 *
 * Check the prompt and options, enqueue a task, and return its id.  A NULL
 * opts means no options.
 */
Datum
kling_submit(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(kling_enqueue(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0),
								  PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1),
								  NULL));
}

/*
 * kling_status(id bigint) RETURNS kling_tasks
 */
Datum
kling_status(PG_FUNCTION_ARGS)
{
	char	   *status;

	PG_RETURN_DATUM(kling_store_fetch(kling_task_id_arg(fcinfo), &status));
}

/*
 * kling_video(id bigint) RETURNS bytea
 */
Datum
kling_video(PG_FUNCTION_ARGS)
{
	PG_RETURN_BYTEA_P(kling_store_video(kling_task_id_arg(fcinfo)));
}

/*
 * kling_cancel(id bigint) RETURNS boolean
 *
 * A pending task is never sent; a sent one is no longer followed.
 */
Datum
kling_cancel(PG_FUNCTION_ARGS)
{
	int64		id = kling_task_id_arg(fcinfo);
	char	   *status = NULL;
	bool		changed = kling_store_cancel(id, &status);

	if (changed)
	{
		kling_note_cancel_at_commit();
		kling_notify_final(id, "cancelled");
	}
	else
		ereport(NOTICE,
				(errmsg("kling task %lld is already %s; nothing to cancel",
						(long long) id, status)));
	PG_RETURN_BOOL(changed);
}

/*
 * kling_retry(id bigint) RETURNS void
 *
 * Send a failed task again if it provably never reached the provider.
 */
Datum
kling_retry(PG_FUNCTION_ARGS)
{
	kling_store_retry(kling_task_id_arg(fcinfo));
	kling_wake_worker_at_commit();
	PG_RETURN_VOID();
}

/* An interval as milliseconds, months counted as 30 days. */
static int64
kling_interval_ms(Interval *interval)
{
	int64		usecs = interval->time +
		((int64) interval->month * DAYS_PER_MONTH + interval->day) * USECS_PER_DAY;

	return usecs / 1000;
}

/*
 * kling_wait(id bigint, timeout interval DEFAULT '30 min') RETURNS kling_tasks
 *
 * Wait until the task is final (and its write-back and callback have run)
 * or the timeout passes, then return its row as it stands (with a NOTICE on
 * a timeout).  The transaction that makes a
 * task final wakes every waiter at its commit.  Cancel requests and
 * statement_timeout interrupt it.  Two waits that could only ever time out
 * are errors: in REPEATABLE READ or SERIALIZABLE (each look would see the
 * task as it was), and for a task this transaction enqueued (it is sent
 * only after commit).
 */
Datum
kling_wait(PG_FUNCTION_ARGS)
{
	int64		id = kling_task_id_arg(fcinfo);
	int64		timeout_ms;
	TimestampTz deadline;
	MemoryContext caller = CurrentMemoryContext;
	MemoryContext look;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("timeout must not be null"),
				 errhint("Leave it out for the default of 30 minutes.")));
	timeout_ms = kling_interval_ms(PG_GETARG_INTERVAL_P(1));
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), Max(timeout_ms, 0));
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("kling_wait cannot wait in a REPEATABLE READ or SERIALIZABLE transaction"),
				 errdetail("Such a transaction sees the task as it was when it began, so it would never see it become final."),
				 errhint("Call kling_wait in a READ COMMITTED transaction (the default), or use kling_status.")));
	if (kling_enqueued_here(id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("kling task %lld was submitted in this transaction", (long long) id),
				 errdetail("A task is sent only once the transaction that submitted it commits, so it cannot become final before then."),
				 errhint("Commit first, then call kling_wait.")));

	look = AllocSetContextCreate(CurrentMemoryContext, "kling_wait", ALLOCSET_SMALL_SIZES);
	for (;;)
	{
		char	   *status;
		Datum		row;
		long		secs;
		int			usecs;
		long		remaining_ms;
		bool		settled;
		bool		isnull;

		MemoryContextReset(look);
		MemoryContextSwitchTo(look);
		row = kling_store_fetch(id, &status);
		MemoryContextSwitchTo(caller);

		TimestampDifference(GetCurrentTimestamp(), deadline, &secs, &usecs);
		remaining_ms = secs * 1000 + usecs / 1000;
		settled = kling_status_is_final(status) &&
			!DatumGetBool(GetAttributeByName(DatumGetHeapTupleHeader(row),
											 "delivery_pending", &isnull));
		if (settled || remaining_ms <= 0)
		{
			Datum		copy = PointerGetDatum(PG_DETOAST_DATUM_COPY(row));

			if (!settled)
				ereport(NOTICE,
						(errmsg("kling_wait timed out: task %lld is still %s%s",
								(long long) id, status,
								kling_status_is_final(status)
								? ", its write-back or callback not yet run" : "")));
			kling_stop_sleeping();
			MemoryContextDelete(look);
			PG_RETURN_DATUM(copy);
		}

		/* Woken when any task becomes final; else look again now and then. */
		kling_sleep_until_final(Min(remaining_ms, KLING_WAIT_STEP_MS));
		CHECK_FOR_INTERRUPTS();
	}
}
