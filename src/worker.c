/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The kling background worker: sends pending tasks to the provider,
 *		polls them, and writes what it learns back into kling_tasks.
 *
 * The loop waits on its latch (set at the commit of new work), on curl's
 * sockets, and on a timeout until the next poll is due.  Each round then
 * runs one transaction: write every finished response, fail what has run
 * out of time, claim the tasks to send or poll, find when the next poll is
 * due.  Only after that commits do the requests go out, so a task is
 * 'submitting' in the table before its create can reach the provider.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/pg_prng.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "delivery.h"
#include "http.h"
#include "launcher.h"
#include "protocol.h"
#include "sandbox.h"
#include "shmem.h"
#include "store.h"
#include "subxact.h"
#include "worker.h"

/* Requests open at once, whatever kling.max_in_flight allows. */
#define KLING_MAX_REQUESTS 256

/* Longest wait between two retries of one request. */
#define KLING_MAX_BACKOFF_MS (5 * 60 * 1000)

/*
 * Work that scans every task in flight (expiry, a recount) is done at most
 * once a second, and without need once a minute.
 */
#define KLING_SCAN_MIN_MS 1000
#define KLING_SCAN_MAX_MS 60000

/* Generation times are learned from at least this many recent tasks. */
#define KLING_HISTORY_MIN_SAMPLES 10
#define KLING_HISTORY_EVERY_MS 10000

/* Retention deletes at most this many tasks a round, and looks once a minute. */
#define KLING_RETENTION_BATCH 1000
#define KLING_RETENTION_EVERY_MS 60000

/* Pause between two starts of the delivery process. */
#define KLING_DELIVERER_RESTART_MS 2000

/* How often to look for the extension in a database that lacks it. */
#define KLING_NO_EXTENSION_RECHECK_MS 10000

static MemoryContext kling_round_context = NULL;
static bool kling_extension_present = true;

/* Whether recovery ran, and the tasks it found held by a user (int8[]). */
static bool kling_recovered = false;
static Datum kling_recover_held = (Datum) 0;

/* Results of creates a user's open transaction held back, to write later. */
static MemoryContext kling_held_context = NULL;
static List *kling_held_updates = NIL;

/* One round: the requests it takes, what they mean, what it claims. */
typedef struct KlingRound
{
	List	   *done;			/* finished KlingHttpRequests */
	KlingTaskUpdate *updates;	/* held results, then one per done request */
	int			nupdates;
	List	   *creates;		/* claimed KlingClaims, bodies built */
	List	   *polls;
	int			to_deliver;		/* final tasks marked for the delivery process */
} KlingRound;

/* When the next poll or send is due; 0 when nothing waits. */
static TimestampTz kling_next_due = 0;

/* The figures behind the kling_worker view, published once a round. */
static KlingWorkerStats kling_stats;

/* Tasks counting against kling.max_in_flight, and when last counted. */
static int	kling_in_flight = 0;
static TimestampTz kling_counted_at = 0;

/* When tasks past kling.task_timeout were last looked for. */
static TimestampTz kling_expired_at = 0;

/*
 * Recent generation times per model and duration, so that a task's first
 * poll waits until such tasks start to finish.
 */
static MemoryContext kling_history_context = NULL;
static List *kling_generation_times = NIL;
static TimestampTz kling_history_at = 0;

/* When retention last ran: it runs at most once a minute. */
static TimestampTz kling_retention_at = 0;

/* While the provider refuses the account, nothing is sent. */
static TimestampTz kling_hold_until = 0;
static int	kling_hold_ms = 0;
static char kling_hold_reason[sizeof(((KlingWorkerStats *) 0)->state)];

/*
 * A kling.* setting the configuration files give a value that is not valid
 * (the server keeps the old one, or the default): nothing is sent until it
 * is fixed, rather than send with a value nobody chose.  Looked for at
 * start and after each reload.
 */
static bool kling_config_checked = false;
static char *kling_config_error = NULL;

static void kling_worker_round(void);
static void kling_round_failed(KlingRound *round);
static void kling_keep_deliverer(void);
static void kling_decide_all(KlingRound *round);
static void kling_keep_held(KlingTaskUpdate *updates, int n, bool all);
static Datum kling_recover(void);
static void kling_round_transaction(KlingRound *round, bool isolate);
static void kling_schedule_next(KlingRound *round, bool can_send, Datum polling);
static void kling_note_recover_held(Datum held);
static List *kling_prepare_creates(List *claims);
static char *kling_build_body(KlingClaim *c);
static Datum kling_polls_under_way(void);
static void kling_apply_isolated(KlingTaskUpdate *update);
static void kling_decide(KlingHttpRequest *req, KlingTaskUpdate *update);
static int	kling_backoff_ms(int attempts);
static void kling_start_hold(const char *reason);
static bool kling_holding(void);
static bool kling_hold_ended(void);
static void kling_start_requests(List *creates, List *polls);
static void kling_apply_retention(void);
static void kling_refresh_generation_times(void);
static bool kling_learned_start_ms(Jsonb *opts, int *first_poll_ms);
static void kling_note_error(const char *message);
static long kling_wait_timeout(void);

/*
 * The worker's entry point.
 */
void
kling_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* The launcher found the database; it may be gone by now (FATAL). */
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
	pgstat_report_appname("kling worker");
	kling_pin_worker_settings();

	/* A launcher that died and came back may start a second worker. */
	if (!kling_shmem_attach_worker())
	{
		ereport(LOG,
				(errmsg("kling worker not started: another kling worker already serves")));
		proc_exit(0);
	}
	kling_http_init();
	kling_round_context = AllocSetContextCreate(TopMemoryContext,
												"kling worker round",
												ALLOCSET_DEFAULT_SIZES);

	ereport(LOG,
			(errmsg("kling worker started for database \"%s\"", kling_database_name)));

	memset(&kling_stats, 0, sizeof(kling_stats));
	kling_stats.pid = MyProcPid;
	kling_stats.database_id = MyDatabaseId;
	kling_stats.started_at = GetCurrentTimestamp();
	strlcpy(kling_stats.state, "starting", sizeof(kling_stats.state));
	kling_stats_publish(&kling_stats);

	/* The first round looks at the table whether or not anything is due. */
	kling_next_due = GetCurrentTimestamp();

	for (;;)
	{
		bool		woken;

		pgstat_report_activity(STATE_IDLE, NULL);
		woken = kling_http_wait(kling_wait_timeout(), PG_WAIT_EXTENSION);
		if (woken)
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* A new key or URL may cure a hold: try again now. */
			kling_hold_until = 0;
			kling_hold_ms = 0;
			kling_config_checked = false;
			woken = true;
		}

		/* While held, a commit's wake-up has nothing to send: sleep on. */
		if ((woken && !kling_holding()) || kling_http_has_done() || kling_hold_ended() ||
			(kling_next_due != 0 && GetCurrentTimestamp() >= kling_next_due))
			kling_worker_round();
	}
}

/*
 * How long the loop may sleep: until the next due poll or send, or the end
 * of a hold; without a limit when nothing waits (the latch wakes it).
 */
static long
kling_wait_timeout(void)
{
	TimestampTz wake = kling_next_due;
	long		secs;
	int			usecs;

	if (!kling_extension_present)
		return KLING_NO_EXTENSION_RECHECK_MS;
	if (kling_holding())
		wake = kling_hold_until;
	if (wake == 0)
		return -1;

	TimestampDifference(GetCurrentTimestamp(), wake, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}

/*
 * One round: take the finished requests, write them and claim new work in
 * one transaction, then send.  If the transaction fails, it runs again with
 * each result in a subtransaction of its own, so that one bad result cannot
 * hold back the others; if that fails too, the results of creates are kept
 * for the next round.  The sends come after the commit, outside the
 * transaction's error handling: a claimed task is always sent.
 */
static void
kling_worker_round(void)
{
	KlingRound	round = {0};
	KlingHttpRequest *req;
	MemoryContext oldcontext;
	ListCell   *lc;

	MemoryContextReset(kling_round_context);
	oldcontext = MemoryContextSwitchTo(kling_round_context);

	/* Commits from now on wake the loop again. */
	kling_take_wake();

	while ((req = kling_http_next_done()) != NULL)
		round.done = lappend(round.done, req);

	PG_TRY();
	{
		kling_round_transaction(&round, false);
	}
	PG_CATCH();
	{
		kling_round_failed(&round);
		PG_TRY();
		{
			kling_round_transaction(&round, true);
		}
		PG_CATCH();
		{
			kling_round_failed(&round);
			kling_keep_held(round.updates, round.nupdates, true);
		}
		PG_END_TRY();
	}
	PG_END_TRY();

	kling_start_requests(round.creates, round.polls);
	if (round.to_deliver > 0)
		kling_wake_deliverer();
	if (kling_extension_present)
		kling_keep_deliverer();

	foreach(lc, round.done)
		kling_http_free(lfirst(lc));

	kling_stats.last_round_at = GetCurrentTimestamp();
	kling_stats.requests_in_flight = kling_http_active();
	strlcpy(kling_stats.state,
			!kling_extension_present ? "waiting for CREATE EXTENSION kling" :
			kling_holding() ? kling_hold_reason :
			"running",
			sizeof(kling_stats.state));
	kling_stats_publish(&kling_stats);

	MemoryContextSwitchTo(oldcontext);
	pgstat_report_stat(false);
}

/*
 * A round's transaction failed: report it, roll it back, and forget what
 * it claimed (the claims are rolled back too).
 */
static void
kling_round_failed(KlingRound *round)
{
	MemoryContextSwitchTo(kling_round_context);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(kling_round_context);
	kling_counted_at = 0;		/* the failed attempt's scans are void */
	kling_expired_at = 0;
	round->creates = NIL;
	round->polls = NIL;
	round->to_deliver = 0;
}

/*
 * Make sure the delivery process runs (it runs every write-back and
 * callback, so that no user code runs here): start it if it is not
 * attached, at most every few seconds, and say once if no slot is free.
 */
static void
kling_keep_deliverer(void)
{
	static TimestampTz tried_at = 0;
	static bool said_no_slot = false;
	TimestampTz now = GetCurrentTimestamp();

	if (kling_shmem_deliverer_attached())
		return;
	if (!TimestampDifferenceExceeds(tried_at, now, KLING_DELIVERER_RESTART_MS))
	{
		/* Too soon to start it again: come back when it is not. */
		TimestampTz retry = TimestampTzPlusMilliseconds(tried_at, KLING_DELIVERER_RESTART_MS);

		if (kling_next_due == 0 || retry < kling_next_due)
			kling_next_due = retry;
		return;
	}
	tried_at = now;
	if (kling_start_deliverer(MyDatabaseId))
		said_no_slot = false;
	else if (!said_no_slot)
	{
		ereport(WARNING,
				(errmsg("kling: could not start the delivery process: no background worker slot free"),
				 errdetail("Write-backs and callbacks wait until one is."),
				 errhint("Raise max_worker_processes.")));
		said_no_slot = true;
	}
}

/*
 * Decide what each finished request means for its task, once per round
 * (deciding has effects: statistics, holds, logs), in the round's context
 * so that a rolled-back attempt keeps the decisions.  Results a user's
 * transaction held back in an earlier round come first.
 */
static void
kling_decide_all(KlingRound *round)
{
	int			nheld = list_length(kling_held_updates);
	ListCell   *lc;

	if (round->updates != NULL)
		return;
	round->nupdates = nheld + list_length(round->done);
	round->updates = MemoryContextAlloc(kling_round_context,
										Max(round->nupdates, 1) * sizeof(KlingTaskUpdate));
	foreach(lc, kling_held_updates)
		round->updates[foreach_current_index(lc)] = *(KlingTaskUpdate *) lfirst(lc);
	foreach(lc, round->done)
	{
		MemoryContext old = MemoryContextSwitchTo(kling_round_context);

		kling_decide(lfirst(lc), &round->updates[nheld + foreach_current_index(lc)]);
		MemoryContextSwitchTo(old);
	}
}

/*
 * Keep for the next round the results of creates that could not be written
 * (a user's open transaction holds the task, or, with all, the round
 * failed): a generation id must not be lost.  Poll results are not kept;
 * the task is simply polled again.
 */
static void
kling_keep_held(KlingTaskUpdate *updates, int n, bool all)
{
	MemoryContext context;
	MemoryContext old;
	List	   *kept = NIL;
	bool		any = false;

	for (int i = 0; i < n && !any; i++)
		any = updates[i].expect == KLING_EXPECT_SUBMITTING && (all || updates[i].held);
	if (!any && kling_held_context == NULL)
		return;

	context = AllocSetContextCreate(TopMemoryContext, "kling held results",
									ALLOCSET_SMALL_SIZES);
	old = MemoryContextSwitchTo(context);
	for (int i = 0; i < n; i++)
	{
		KlingTaskUpdate *u = &updates[i];
		KlingTaskUpdate *copy;

		if (u->expect != KLING_EXPECT_SUBMITTING || !(all || u->held))
			continue;
		copy = palloc(sizeof(KlingTaskUpdate));
		*copy = *u;
		copy->held = false;
		copy->status = u->status ? pstrdup(u->status) : NULL;
		copy->generation_id = u->generation_id ? pstrdup(u->generation_id) : NULL;
		copy->video_url = u->video_url ? pstrdup(u->video_url) : NULL;
		copy->result = u->result ? (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(u->result)) : NULL;
		copy->error = u->error ? pstrdup(u->error) : NULL;
		kept = lappend(kept, copy);
	}
	MemoryContextSwitchTo(old);

	if (kling_held_context != NULL)
		MemoryContextDelete(kling_held_context);
	kling_held_context = kept != NIL ? context : NULL;
	kling_held_updates = kept;
	if (kept == NIL)
		MemoryContextDelete(context);
}

/*
 * Take over from a worker that stopped: once at start, then again for the
 * tasks a user's open transaction held back, until there are none.
 * Returns the array of tasks still held, in the round's context, or
 * (Datum) 0.
 */
static Datum
kling_recover(void)
{
	Datum		held;
	int			n;

	if (kling_recovered && kling_recover_held == (Datum) 0)
		return (Datum) 0;
	n = kling_store_recover(kling_recover_held, &held);
	if (n > 0)
		ereport(LOG,
				(errmsg("kling: %d tasks were being sent when the server stopped; they failed with an unknown outcome", n)));
	return held;
}

/*
 * The round's transaction: write results, housekeeping, claim, schedule.
 * What it claims is sent by the caller once it has committed.
 */
static void
kling_round_transaction(KlingRound *round, bool isolate)
{
	int			room = KLING_MAX_REQUESTS - kling_http_active();
	bool		can_send;
	TimestampTz now;
	Datum		polling;
	Datum		still_held;

	pgstat_report_activity(STATE_RUNNING, "kling: writing results and claiming tasks");

	kling_extension_present = kling_store_begin_round();
	if (!kling_extension_present)
	{
		/* Nothing to write into: results of a dropped table are moot. */
		kling_store_end_round();
		kling_next_due = 0;
		kling_counted_at = 0;
		return;
	}

	still_held = kling_recover();
	kling_decide_all(round);
	if (isolate)
	{
		for (int i = 0; i < round->nupdates; i++)
			kling_apply_isolated(&round->updates[i]);
	}
	else
		kling_store_apply_all(round->updates, round->nupdates);

	/* Expiry is due every tenth of the timeout, within those bounds. */
	now = GetCurrentTimestamp();
	if (TimestampDifferenceExceeds(kling_expired_at, now,
								   Min(KLING_SCAN_MAX_MS,
									   Max(KLING_SCAN_MIN_MS, kling_task_timeout_ms / 10))))
	{
		kling_store_expire(kling_task_timeout_ms);
		kling_expired_at = now;
	}
	kling_apply_retention();
	kling_refresh_generation_times();

	/*
	 * The count of tasks in flight is kept up by hand, never below the
	 * truth: a task cancelled by a user, or a create sent back to pending,
	 * is only noticed by a recount.  A recount scans them all, so it is
	 * done once a second while the count holds sends back, else once a
	 * minute.
	 */
	kling_in_flight -= list_length(kling_store_finalized());
	if (TimestampDifferenceExceeds(kling_counted_at, now,
								   kling_in_flight >= kling_max_in_flight
								   ? KLING_SCAN_MIN_MS : KLING_SCAN_MAX_MS))
	{
		kling_in_flight = kling_store_count_in_flight();
		kling_counted_at = now;
	}

	if (!kling_config_checked)
	{
		if (kling_config_error != NULL)
			pfree(kling_config_error);
		kling_config_error = kling_store_config_error(TopMemoryContext);
		kling_config_checked = true;
	}
	if (kling_config_error != NULL)
		kling_start_hold(kling_config_error);
	else if (kling_effective_api_key()[0] == '\0')
		kling_start_hold("no API key: set kling.api_key, or AIMLAPI_API_KEY in the server's environment");

	can_send = !kling_holding();
	if (can_send && room > 0)
	{
		int			free_slots = kling_max_in_flight - kling_in_flight;

		if (free_slots > 0)
			round->creates = kling_prepare_creates(kling_store_claim_creates(Min(free_slots, room)));
		kling_in_flight += list_length(round->creates);
		room -= list_length(round->creates);
		can_send = (free_slots > list_length(round->creates));
	}
	polling = kling_polls_under_way();
	if (!kling_holding() && room > 0)
		round->polls = kling_store_claim_polls(room, polling);

	/* Every task made final: by results, expiry, recovery, unbuildable claims. */
	round->to_deliver = kling_announce_finalized();

	kling_schedule_next(round, can_send, polling);
	kling_store_end_round();

	/* Only now that it committed: what it recovered and held back. */
	kling_recovered = true;
	kling_note_recover_held(still_held);
	kling_keep_held(round->updates, round->nupdates, false);
}

/*
 * When the loop should come back: the next due poll or send.  Work that
 * was due when the claims looked (SQL's now() is the round's start) but
 * could not be claimed (rows locked by others, or every request slot busy)
 * must not make the loop spin: look again a little later.  Finished
 * requests wake the loop anyway.  Work that fell due while the round ran
 * is due now, not later.
 */
static void
kling_schedule_next(KlingRound *round, bool can_send, Datum polling)
{
	if (!kling_store_next_due(can_send, polling, &kling_next_due))
		kling_next_due = 0;
	else
	{
		TimestampTz claimed_at = GetCurrentTransactionStartTimestamp();

		if (kling_next_due <= claimed_at && round->creates == NIL && round->polls == NIL)
			kling_next_due = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														 Min(kling_poll_interval_ms, 1000));
	}

	/*
	 * Pending tasks held back by kling.max_in_flight wait for a slot; a
	 * slot freed by a user's cancel shows only in a recount, so come back
	 * for one even if nothing else is due.  So do results and recoveries a
	 * user's transaction held back.
	 */
	if (!kling_holding() && kling_in_flight >= kling_max_in_flight &&
		kling_store_pending_exists())
	{
		TimestampTz recount = TimestampTzPlusMilliseconds(kling_counted_at, KLING_SCAN_MIN_MS);

		if (kling_next_due == 0 || recount < kling_next_due)
			kling_next_due = recount;
	}
	if (kling_held_updates != NIL || kling_recover_held != (Datum) 0)
	{
		TimestampTz retry = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														Min(kling_poll_interval_ms, 1000));

		if (kling_next_due == 0 || retry < kling_next_due)
			kling_next_due = retry;
	}
}

/* Remember, past the round, the recovered tasks still held back. */
static void
kling_note_recover_held(Datum held)
{
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	if (kling_recover_held != (Datum) 0)
		pfree(DatumGetPointer(kling_recover_held));
	kling_recover_held = held == (Datum) 0 ? (Datum) 0 : datumCopy(held, false, -1);
	MemoryContextSwitchTo(old);
}

/*
 * Build the request body of each claimed create, before the claim commits.
 * A task whose body cannot be built (its text cannot be sent as UTF-8)
 * fails now, with the reason, instead of staying 'submitting'.
 */
static List *
kling_prepare_creates(List *claims)
{
	List	   *ready = NIL;
	ListCell   *lc;

	foreach(lc, claims)
	{
		KlingClaim *c = lfirst(lc);
		char	   *failure = kling_build_body(c);

		if (failure == NULL)
		{
			/* The list outlives the transaction (and SPI): sent after it. */
			MemoryContext old = MemoryContextSwitchTo(kling_round_context);

			ready = lappend(ready, c);
			MemoryContextSwitchTo(old);
		}
		else
		{
			KlingTaskUpdate u = {0};

			u.id = c->id;
			u.expect = KLING_EXPECT_SUBMITTING;
			u.status = "failed";
			u.error = psprintf("could not build the request: %s", failure);
			ereport(LOG, (errmsg("kling: task %lld failed: %s", (long long) c->id, u.error)));
			kling_store_apply_all(&u, 1);
		}
	}
	return ready;
}

/* Body step for kling_try_in_subtransaction. */
static void
kling_build_body_step(void *arg)
{
	KlingClaim *c = arg;
	MemoryContext old = MemoryContextSwitchTo(kling_round_context);

	c->body = kling_create_body(c->prompt, c->opts);
	MemoryContextSwitchTo(old);
}

/*
 * Build a claimed create's body; NULL if it worked, else why not.  Only a
 * database encoding other than UTF-8 can make it fail, so only then is it
 * worth a subtransaction.
 */
static char *
kling_build_body(KlingClaim *c)
{
	if (GetDatabaseEncoding() == PG_UTF8)
	{
		kling_build_body_step(c);
		return NULL;
	}
	return kling_try_in_subtransaction(kling_build_body_step, c);
}

/* The tasks whose poll is under way, as an int8[] for the store. */
static Datum
kling_polls_under_way(void)
{
	int64	   *ids = palloc(Max(kling_http_active(), 1) * sizeof(int64));

	return kling_store_id_array(ids, kling_http_running_tasks(KLING_REQUEST_POLL, ids));
}

/* Apply step for kling_try_in_subtransaction. */
static void
kling_apply_step(void *arg)
{
	kling_store_apply_all((KlingTaskUpdate *) arg, 1);
}

/*
 * Write one result in a subtransaction; if that fails, the task fails with
 * the reason instead.
 */
static void
kling_apply_isolated(KlingTaskUpdate *update)
{
	char	   *failure = kling_try_in_subtransaction(kling_apply_step, update);

	if (failure == NULL)
		return;

	ereport(WARNING,
			(errmsg("kling: could not record the response for task %lld: %s",
					(long long) update->id, failure)));
	update->status = "failed";
	update->result = NULL;
	update->video_url = NULL;
	update->error = psprintf("could not record the provider's response: %s", failure);
	kling_store_apply_all(update, 1);
}

/*
 * Turn a finished request into the change it makes to its task, following
 * the retry policy: transient failures back off and count against
 * kling.max_attempts; a refused account holds everything.
 */
static void
kling_decide(KlingHttpRequest *req, KlingTaskUpdate *u)
{
	bool		create = (req->kind == KLING_REQUEST_CREATE);
	const char *failure = kling_http_failure(req);
	KlingResponse r;

	if (failure != NULL)
		kling_read_transport_failure(req->kind, req->request_sent, failure, &r);
	else
		kling_read_response(req->kind, req->http_status, req->body, req->body_len,
							req->retry_after, &r);

	if (failure != NULL || req->http_status < 200 || req->http_status >= 300)
		kling_stats.requests_failed++;
	if (req->http_status == 429)
		kling_stats.rate_limited++;
	if (r.outcome == KLING_OUTCOME_RETRY)
		kling_stats.requests_retried++;
	if (r.message != NULL)
		kling_note_error(r.message);

	memset(u, 0, sizeof(*u));
	u->id = req->task_id;
	u->expect = create ? KLING_EXPECT_SUBMITTING : KLING_EXPECT_AT_PROVIDER;
	u->result = r.result;
	u->next_attempt_ms = kling_poll_interval_ms;

	/* The account works again: the next hold starts short. */
	if (r.outcome == KLING_OUTCOME_ACCEPTED || r.outcome == KLING_OUTCOME_PENDING ||
		r.outcome == KLING_OUTCOME_COMPLETED)
		kling_hold_ms = 0;

	switch (r.outcome)
	{
		case KLING_OUTCOME_ACCEPTED:
			u->status = r.state;
			u->generation_id = r.generation_id;
			u->next_attempt_ms = Max(kling_poll_interval_ms, req->first_poll_ms);
			break;
		case KLING_OUTCOME_PENDING:
			u->status = r.state;
			/*
			 * Inside the learned window completions are near: look every
			 * 40% of the interval, so one waits under half an interval.
			 */
			if (req->learned)
				u->next_attempt_ms = Max(kling_poll_interval_ms * 2 / 5, 1);
			break;
		case KLING_OUTCOME_COMPLETED:
			u->status = "completed";
			u->video_url = r.video_url;
			break;
		case KLING_OUTCOME_FAILED:
			u->status = "failed";
			u->error = r.message;
			break;
		case KLING_OUTCOME_RETRY:

			/*
			 * Every refusal counts, so the backoff grows even for a 429
			 * (which never fails a task by itself), and Retry-After can
			 * lengthen the wait but not shorten it below the backoff.
			 */
			u->attempts = req->attempts + 1;
			if (r.counts_attempt && u->attempts >= kling_max_attempts)
			{
				u->status = "failed";
				u->error = psprintf("gave up after %d attempts: %s", u->attempts, r.message);
				break;
			}
			u->status = create ? "pending" : NULL;
			u->error = r.message;
			u->next_attempt_ms = Max(r.retry_after_ms, kling_backoff_ms(u->attempts));
			break;
		case KLING_OUTCOME_HOLD:
			kling_start_hold(r.message);
			u->status = create ? "pending" : NULL;
			u->attempts = req->attempts;
			u->error = r.message;
			u->next_attempt_ms = kling_hold_ms;
			break;
	}

	if (u->status != NULL && strcmp(u->status, "failed") == 0)
		ereport(LOG,
				(errmsg("kling: task %lld failed: %s", (long long) u->id, u->error)));
	else if (u->status != NULL)
		elog(DEBUG1, "kling: task %lld is %s", (long long) u->id, u->status);
}

/*
 * Exponential backoff from the poll interval, with +/-25% jitter so that
 * tasks that failed together do not retry together.
 */
static int
kling_backoff_ms(int attempts)
{
	double		delay = kling_poll_interval_ms;

	for (int i = 1; i < attempts && delay < KLING_MAX_BACKOFF_MS; i++)
		delay *= 2;
	delay = Min(delay, KLING_MAX_BACKOFF_MS);
	delay *= 0.75 + 0.5 * pg_prng_double(&pg_global_prng_state);
	return (int) delay;
}

/*
 * Hold all sending: the provider refused the account, or there is no key.
 * The hold doubles each time it is renewed, up to a minute, and is logged
 * once per renewal; a reload (SIGHUP) ends it at once.
 */
static void
kling_start_hold(const char *reason)
{
	const char *colon = strchr(reason, ':');

	if (kling_holding())
		return;

	/* The kling_worker view says why: the reason up to its first colon. */
	snprintf(kling_hold_reason, sizeof(kling_hold_reason), "holding: %.*s",
			 colon ? (int) (colon - reason) : (int) strlen(reason), reason);

	kling_hold_ms = kling_hold_ms == 0
		? Min(kling_poll_interval_ms, 60000)
		: Min(kling_hold_ms * 2, 60000);
	kling_hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), kling_hold_ms);
	ereport(WARNING,
			(errmsg("kling: %s", reason),
			 errdetail("No task is sent or polled for %d ms; tasks keep their place.",
					   kling_hold_ms)));
}

/* Whether sending is held now. */
static bool
kling_holding(void)
{
	return kling_hold_until != 0 && GetCurrentTimestamp() < kling_hold_until;
}

/*
 * Whether a hold has just run out: the held tasks are due again, so a round
 * must look at them even if nothing else woke the loop.
 */
static bool
kling_hold_ended(void)
{
	if (kling_hold_until == 0 || kling_holding())
		return false;
	kling_hold_until = 0;
	return true;
}

/*
 * Send the claimed creates and polls.  A request that cannot even start
 * fails its task through the usual path, in the next round.
 */
static void
kling_start_requests(List *creates, List *polls)
{
	char	   *create_url = kling_create_url(kling_base_url, kling_api_route);

	ListCell   *lc;

	foreach(lc, creates)
	{
		KlingClaim *c = lfirst(lc);
		KlingHttpRequest *req;

		req = kling_http_start(KLING_REQUEST_CREATE, c->id, c->attempts, create_url,
							   c->body);
		req->learned = kling_learned_start_ms(c->opts, &req->first_poll_ms);
	}

	foreach(lc, polls)
	{
		KlingClaim *c = lfirst(lc);

		KlingHttpRequest *req;
		int			unused;

		req = kling_http_start(KLING_REQUEST_POLL, c->id, c->attempts,
							   kling_poll_url(kling_base_url, kling_api_route, c->generation_id),
							   NULL);
		req->learned = kling_learned_start_ms(c->opts, &unused);
	}

	kling_stats.requests_sent += list_length(creates) + list_length(polls);
	if (creates != NIL || polls != NIL)
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("kling: %d requests in flight",
										kling_http_active()));
}

/* Remember the latest error, for the kling_worker view. */
static void
kling_note_error(const char *message)
{
	strlcpy(kling_stats.last_error, message, sizeof(kling_stats.last_error));
	kling_stats.last_error_at = GetCurrentTimestamp();
}

/*
 * Delete final tasks older than kling.retention, a small batch at a time,
 * at most once a minute.  Off (0) by default: the history is the user's.
 */
static void
kling_apply_retention(void)
{
	TimestampTz now = GetCurrentTimestamp();
	int			deleted;

	if (kling_retention_s <= 0 ||
		!TimestampDifferenceExceeds(kling_retention_at, now, KLING_RETENTION_EVERY_MS))
		return;

	deleted = kling_store_delete_expired(kling_retention_s, KLING_RETENTION_BATCH);
	/* A full batch means more are due: come back next round, not in a minute. */
	if (deleted < KLING_RETENTION_BATCH)
		kling_retention_at = now;
	if (deleted > 0)
		elog(DEBUG1, "kling: retention deleted %d final tasks", deleted);
}

/* Refresh the generation times learned from the history, every 10 s. */
static void
kling_refresh_generation_times(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(kling_history_at, now, KLING_HISTORY_EVERY_MS))
		return;
	if (kling_history_context == NULL)
		kling_history_context = AllocSetContextCreate(TopMemoryContext,
													  "kling generation times",
													  ALLOCSET_SMALL_SIZES);
	MemoryContextReset(kling_history_context);
	kling_generation_times = kling_store_generation_times(kling_history_context);
	kling_history_at = now;
}

/*
 * When to poll a task first, from the history of its model and duration:
 * one poll interval before the time by which the quickest 1% of recent such
 * tasks had finished (learned anew every 10 s).  No poll before then is
 * likely to find it done, so the polls go where the completions are, and
 * from then on they come every 40% of the poll interval.  Returns false, and
 * *first_poll_ms = 0, without enough history.
 */
static bool
kling_learned_start_ms(Jsonb *opts, int *first_poll_ms)
{
	JsonbValue	model;
	JsonbValue	duration;
	char	   *model_text;
	char	   *duration_text;
	ListCell   *lc;

	*first_poll_ms = 0;
	if (getKeyJsonValueFromContainer(&opts->root, "model", 5, &model) == NULL ||
		model.type != jbvString ||
		getKeyJsonValueFromContainer(&opts->root, "duration", 8, &duration) == NULL ||
		duration.type != jbvNumeric)
		return false;
	model_text = pnstrdup(model.val.string.val, model.val.string.len);
	duration_text = DatumGetCString(DirectFunctionCall1(numeric_out,
														NumericGetDatum(duration.val.numeric)));

	foreach(lc, kling_generation_times)
	{
		KlingGenerationTime *t = lfirst(lc);

		if (t->samples >= KLING_HISTORY_MIN_SAMPLES &&
			strcmp(t->model, model_text) == 0 && strcmp(t->duration, duration_text) == 0)
		{
			*first_poll_ms = Max(0, t->p1_ms - kling_poll_interval_ms);
			return true;
		}
	}
	return false;
}
