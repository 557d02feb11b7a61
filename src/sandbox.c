/*-------------------------------------------------------------------------
 *
 * sandbox.c
 *		Running code with rights its caller lacks, and running a user's
 *		code on the user's behalf, without either one reaching the other.
 *
 * A role granted the extension's functions is not trusted: it controls its
 * search_path, its schemas and what they hold, and its settings.  So every
 * query that runs as the table's owner, or in the worker, is parsed and run
 * with search_path pinned to pg_catalog, pg_temp (as PostgreSQL's own
 * maintenance commands do since 17), and the worker pins the settings a
 * database owner could otherwise impose on it through ALTER DATABASE.
 *
 * User code (a write-back into the user's table, a callback) runs as the
 * task's owner, in a security-restricted operation (no SET ROLE, no
 * deferred triggers that would fire later with the worker's rights), in a
 * subtransaction of its own, with its setting changes undone when it
 * returns and a time limit (kling.delivery_timeout).  Only the delivery
 * process runs user code (deliverer.c), so none can hold up the worker.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "sandbox.h"

/*
 * After the time limit, user code is cancelled again this often; if it
 * still runs after this many cancels (it catches query_canceled), the
 * process ends: only the delivery process runs user code, and it is
 * started again without it.
 */
#define KLING_CANCEL_REPEAT_MS 100
#define KLING_CANCELS_BEFORE_EXIT 20

/* What a database owner could set that would steer the worker's queries. */
static const struct
{
	const char *name;
	const char *value;
}			kling_worker_settings[] = {
	{"search_path", KLING_SAFE_SEARCH_PATH},
	{"statement_timeout", "0"},
	{"lock_timeout", "0"},
	{"idle_in_transaction_session_timeout", "0"},
	{"default_transaction_isolation", "read committed"},
	{"default_transaction_read_only", "off"},
	{"default_transaction_deferrable", "off"},
	{"IntervalStyle", "postgres"},
};

/* A user's step and whom it runs as. */
typedef struct KlingUserCall
{
	Oid			role;
	KlingStep	step;
	void	   *arg;
} KlingUserCall;

static TimeoutId kling_user_timeout = MAX_TIMEOUTS;
static volatile sig_atomic_t kling_user_timed_out = false;
static volatile sig_atomic_t kling_user_cancels = 0;

/*
 * Pin search_path for the queries that follow, in a new GUC nest level;
 * kling_unpin_settings(nestlevel) undoes it and any setting changed since.
 * An error on the way undoes both through the (sub)transaction's abort.
 */
int
kling_pin_search_path(void)
{
	int			nestlevel = NewGUCNestLevel();

	(void) set_config_option("search_path", KLING_SAFE_SEARCH_PATH,
							 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	return nestlevel;
}

/* Undo every setting changed since kling_pin_search_path, SET or not. */
void
kling_unpin_settings(int nestlevel)
{
	AtEOXact_GUC(false, nestlevel);
}

/*
 * Pin the worker's settings for its whole life, above anything ALTER
 * DATABASE or ALTER ROLE may have set for it (PGC_S_OVERRIDE); a reload
 * of the configuration file does not touch them either.
 */
void
kling_pin_worker_settings(void)
{
	for (int i = 0; i < (int) lengthof(kling_worker_settings); i++)
		SetConfigOption(kling_worker_settings[i].name, kling_worker_settings[i].value,
						PGC_SUSET, PGC_S_OVERRIDE);
}

/*
 * Past the time limit: cancel what runs, the way statement_timeout does.
 * It repeats until disabled, so user code that catches query_canceled is
 * cancelled again, and after KLING_CANCELS_BEFORE_EXIT the process ends.
 */
static void
kling_user_timeout_handler(void)
{
	kling_user_timed_out = true;
	if (++kling_user_cancels > KLING_CANCELS_BEFORE_EXIT)
		ProcDiePending = true;
	else
		QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* The user's step, as the user, restricted, with settings undone after. */
static void
kling_user_step(void *arg)
{
	KlingUserCall *call = arg;
	Oid			save_userid;
	int			save_sec_context;
	int			nestlevel;

	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	nestlevel = kling_pin_search_path();
	/* A lock in the user's table is waited for no longer than the limit. */
	(void) set_config_option("lock_timeout", psprintf("%d", kling_delivery_timeout_ms),
							 PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SAVE, true, 0, false);
	SetUserIdAndSecContext(call->role,
						   save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	call->step(call->arg);
	SetUserIdAndSecContext(save_userid, save_sec_context);
	kling_unpin_settings(nestlevel);
}

/*
 * Run step(arg) as role, sandboxed as said at the top of the file.
 * Returns NULL if it succeeded, or why it failed (then everything it did is
 * rolled back).
 */
char *
kling_run_as_user(Oid role, KlingStep step, void *arg)
{
	KlingUserCall call = {role, step, arg};
	char	   *failure;

	if (kling_user_timeout == MAX_TIMEOUTS)
		kling_user_timeout = RegisterTimeout(USER_TIMEOUT, kling_user_timeout_handler);

	kling_user_timed_out = false;
	kling_user_cancels = 0;
	enable_timeout_every(kling_user_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 kling_delivery_timeout_ms),
						 KLING_CANCEL_REPEAT_MS);
	failure = kling_try_in_subtransaction(kling_user_step, &call);
	disable_timeout(kling_user_timeout, false);

	if (kling_user_timed_out)
	{
		/* The cancel was ours; one still pending must not hit what follows. */
		QueryCancelPending = false;
		if (failure != NULL)
			failure = psprintf("canceled: took longer than kling.delivery_timeout (%d ms)",
							   kling_delivery_timeout_ms);
	}
	return failure;
}
