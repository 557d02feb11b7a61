/*-------------------------------------------------------------------------
 *
 * worker.c
 *		The kling background worker: sends pending tasks to the provider,
 *		polls them, and writes what it learns back into kling_tasks.
 *
 * The loop waits on its latch (set at the commit of new work), on curl's
 * sockets, and on a timeout until the next poll or send is due.  Each round
 * then reads the finished requests and decides what each means (policy.c),
 * and runs one transaction of named phases: write the results, housekeeping,
 * claim the pending tasks to send, announce the tasks made final, look
 * ahead.  Only after that commits, outside its error handling, come the
 * effects of the decisions, the poll schedule (schedule.c), and the sends:
 * a task is 'submitting' in the table before its create can reach the
 * provider, and a poll that finds nothing new writes nothing.
 *
 * Everything the worker knows between rounds is in one KlingWorkerState;
 * kling_forget_aborted_round() says what a failed round's rollback takes
 * back from it.
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
#include "commands/dbcommands.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "account.h"
#include "cluster.h"
#include "delivery.h"
#include "http.h"
#include "keeper.h"
#include "launcher.h"
#include "models.h"
#include "policy.h"
#include "responses.h"
#include "sandbox.h"
#include "schedule.h"
#include "settings.h"
#include "shmem.h"
#include "store.h"
#include "subxact.h"
#include "wait_events.h"
#include "worker.h"

/* Requests open at once, whatever kling.max_in_flight allows. */
#define KLING_MAX_REQUESTS 256

/*
 * Work that scans every task in flight (expiry, a recount, a check of the
 * poll schedule) is done at most once a second, and without need once a
 * minute.
 */
#define KLING_SCAN_MIN_MS 1000
#define KLING_SCAN_MAX_MS 60000

#define KLING_HISTORY_EVERY_MS 10000

/* Retention deletes at most this many tasks a round, and looks once a minute. */
#define KLING_RETENTION_BATCH 1000
#define KLING_RETENTION_EVERY_MS 60000

/* Pause between two starts of the delivery process. */
#define KLING_DELIVERER_RESTART_MS 2000

/* After a failed round, or rows a user holds: look again this soon. */
#define KLING_RETRY_SOON_MS 1000

/* One finished request (or a create's result carried from a round before). */
typedef struct KlingResult
{
	KlingSent  *sent;
	KlingHttpRequest *request;	/* NULL: carried */
	KlingDecision decision;
} KlingResult;

/* Everything the worker knows between rounds. */
typedef struct KlingWorkerState
{
	MemoryContext round_context;	/* reset at each round */
	MemoryContext sent_context; /* what each request in flight was for */
	bool		extension_present;
	bool		announced;		/* the log said it serves its database */
	uint32		extension_generation;	/* as the round began */
	bool		subscribed;		/* kling_tasks is a subscriber's copy */
	TimestampTz subscribed_checked_at;
	Oid			schedule_extension; /* the extension the schedule is of */
	TimestampTz next_due;		/* when to run a round; 0: when woken */
	KlingWorkerStats stats;		/* published for the kling_worker view */

	/* Taking over from a stopped worker; done once it commits. */
	bool		recovered;
	Datum		recover_held;	/* int8[] of tasks a user held, or 0 */

	/* Results of creates not written yet (a user held the task, or the round failed). */
	MemoryContext carried_context;
	List	   *carried;		/* KlingResult */

	int			in_flight;		/* tasks counting against max_in_flight */
	bool		budget_short;	/* the account's budget held sends back */
	int			account_limit;	/* this server's part of kling.max_in_flight */
	TimestampTz limit_checked_at;
	TimestampTz counted_at;
	TimestampTz expired_at;
	TimestampTz checked_at;		/* the poll schedule against the table */
	uint32		cancels_seen;
	bool		schedule_stale; /* a poll found its task gone: check first */
	TimestampTz retention_at;

	MemoryContext history_context;
	List	   *generation_times;
	TimestampTz history_at;

	TimestampTz hold_until;		/* while the provider refuses the account */
	int			hold_ms;
	char		hold_reason[sizeof(((KlingWorkerStats *) 0)->state)];

	/* A kling.* setting the configuration files give an invalid value. */
	bool		config_checked;
	char	   *config_error;

	TimestampTz deliverer_tried_at;
	bool		said_no_slot;
} KlingWorkerState;

/* One round: what it read, decided, made final and claimed. */
typedef struct KlingRound
{
	int			n;
	KlingResult *results;		/* carried ones first */
	bool		decided;
	KlingIds	made_final;
	List	   *creates;		/* KlingClaim, bodies built */
	bool		pending_waits;	/* a pending task waits to be sent */
	TimestampTz send_due;		/* when the next one is due; 0: none */
	Datum		still_held;		/* recovery's tasks a user holds */
	int			to_deliver;
	TimestampTz keep_due;		/* when a video waits to be fetched; 0: none */
	bool		committed;
} KlingRound;

static KlingWorkerState W;

static void kling_worker_init(void);
static long kling_wait_timeout(void);
static void kling_worker_round(void);
static void kling_take_results(KlingRound *round);
static void kling_round_transaction(KlingRound *round, bool isolate);
static void kling_round_aborted(KlingRound *round);
static void kling_round_isolated(KlingRound *round);
static void kling_forget_aborted_round(KlingRound *round);
static void kling_decide_results(KlingRound *round);
static void kling_write_results(KlingRound *round, bool isolate);
static void kling_apply_isolated(KlingTaskUpdate *update, KlingIds *made_final);
static void kling_housekeeping(KlingRound *round);
static void kling_recover(KlingRound *round);
static bool kling_once_a_second(TimestampTz *at);
static void kling_check_subscribed(void);
static void kling_check_account_limit(void);
static void kling_check_schedule(void);
static void kling_schedule_task(const KlingAtProvider *t, void *arg);
static void kling_count_in_flight(KlingRound *round);
static void kling_apply_retention(void);
static void kling_refresh_generation_times(void);
static void kling_check_config(void);
static void kling_claim_creates(KlingRound *round);
static char *kling_build_body(KlingClaim *c);
static void kling_look_ahead(KlingRound *round);
static void kling_after_round(KlingRound *round);
static void kling_apply_effects(KlingRound *round);
static void kling_follow_schedule(KlingRound *round);
static bool kling_must_carry(KlingRound *round, KlingResult *r);
static void kling_carry_creates(KlingRound *round);
static void kling_send(KlingRound *round);
static void kling_plan_next_round(KlingRound *round);
static void kling_keep_deliverer(void);
static void kling_worker_announce(void);
static void kling_worker_rest(KlingRest rest);
static void kling_start_hold(const char *reason);
static bool kling_holding(void);
static bool kling_hold_ended(void);
static void kling_due_by(TimestampTz when);
static const char *kling_opt_text(Jsonb *opts, const char *key);

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
				(errmsg("kling worker not started: another kling worker already serves this database")));
		proc_exit(0);
	}
	kling_worker_init();

	for (;;)
	{
		bool		woken;

		pgstat_report_activity(STATE_IDLE, NULL);
		woken = kling_http_wait(kling_wait_timeout(), kling_wait_event(KLING_WAIT_WORKER));
		if (woken)
			ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* A new key or URL may cure a hold: try again now. */
			kling_account_release();
			W.limit_checked_at = 0;	/* kling.max_in_flight may have changed */
			W.hold_until = 0;
			W.hold_ms = 0;
			W.config_checked = false;
			woken = true;
		}

		/* While held, a commit's wake-up has nothing to send: sleep on. */
		if ((woken && !kling_holding()) || kling_http_has_done() || kling_hold_ended() ||
			(W.next_due != 0 && GetCurrentTimestamp() >= W.next_due))
			kling_worker_round();
	}
}

/* The worker's state at start: the first round looks at the table at once. */
static void
kling_worker_init(void)
{
	memset(&W, 0, sizeof(W));
	kling_http_init();
	on_proc_exit(kling_keeper_at_exit, (Datum) 0);
	kling_schedule_clear();
	W.round_context = AllocSetContextCreate(TopMemoryContext, "kling worker round",
											ALLOCSET_DEFAULT_SIZES);
	W.sent_context = AllocSetContextCreate(TopMemoryContext, "kling requests",
										   ALLOCSET_DEFAULT_SIZES);
	W.history_context = AllocSetContextCreate(TopMemoryContext, "kling generation times",
											  ALLOCSET_SMALL_SIZES);
	W.extension_present = true;
	W.next_due = GetCurrentTimestamp();
	W.stats.pid = MyProcPid;
	W.stats.database_id = MyDatabaseId;
	W.stats.started_at = GetCurrentTimestamp();
	strlcpy(W.stats.state, "starting", sizeof(W.stats.state));
	kling_stats_publish(&W.stats);
}

/*
 * How long the loop may sleep: until the next due poll or send, or the end
 * of a hold; without a limit when nothing waits (the latch wakes it).
 */
static long
kling_wait_timeout(void)
{
	TimestampTz wake = W.next_due;
	long		secs;
	int			usecs;

	if (kling_http_has_done())
		return 0;				/* requests that could not start */
	if (kling_holding())
		wake = W.hold_until;
	if (wake == 0)
		return -1;

	TimestampDifference(GetCurrentTimestamp(), wake, &secs, &usecs);
	return secs * 1000 + (usecs + 999) / 1000;
}

/*
 * One round.  If its transaction fails, it runs again with each result in
 * a subtransaction of its own, so that one bad result cannot hold back the
 * others; if that fails too, the results of creates are carried to the
 * next round and the polls are made again.  Either way what comes after
 * runs once, outside the transaction's error handling.
 */
static void
kling_worker_round(void)
{
	KlingRound	round = {0};
	MemoryContext oldcontext;

	MemoryContextReset(W.round_context);
	oldcontext = MemoryContextSwitchTo(W.round_context);

	/* Commits from now on wake the loop again. */
	kling_take_wake();
	W.extension_generation = kling_shmem_extension_generation();
	kling_take_results(&round);

	PG_TRY();
	{
		kling_round_transaction(&round, false);
	}
	PG_CATCH();
	{
		kling_round_aborted(&round);
		kling_round_isolated(&round);
	}
	PG_END_TRY();

	kling_after_round(&round);
	MemoryContextSwitchTo(oldcontext);
	pgstat_report_stat(false);
}

/* The failed round again, each result in a subtransaction of its own. */
static void
kling_round_isolated(KlingRound *round)
{
	PG_TRY();
	{
		kling_round_transaction(round, true);
	}
	PG_CATCH();
	{
		kling_round_aborted(round);
	}
	PG_END_TRY();
}

/* The round's results: those carried from before, then the finished requests. */
static void
kling_take_results(KlingRound *round)
{
	KlingHttpRequest *req;
	List	   *done = NIL;
	ListCell   *lc;
	int			i = 0;

	while ((req = kling_http_next_done()) != NULL)
		if (!kling_keeper_take(req))
			done = lappend(done, req);
	round->n = list_length(W.carried) + list_length(done);
	round->results = palloc0(Max(round->n, 1) * sizeof(KlingResult));
	foreach(lc, W.carried)
		round->results[i++] = *(KlingResult *) lfirst(lc);
	foreach(lc, done)
	{
		req = lfirst(lc);
		round->results[i].request = req;
		round->results[i++].sent = req->owner;
	}
}

/*
 * The round's transaction, phase by phase.  What it claims is sent by the
 * caller once it has committed.
 */
static void
kling_round_transaction(KlingRound *round, bool isolate)
{
	pgstat_report_activity(STATE_RUNNING, "kling: writing results and claiming tasks");

	W.extension_present = kling_store_begin_round();
	if (!W.extension_present)
	{
		/* Nothing to write into: results of a dropped table are moot. */
		kling_store_end_round();
		round->committed = true;
		return;
	}

	if (!round->decided)
		kling_decide_results(round);
	kling_write_results(round, isolate);
	round->keep_due = kling_keeper_round();
	kling_housekeeping(round);
	kling_claim_creates(round);
	round->to_deliver = kling_announce_finalized(&round->made_final);
	kling_look_ahead(round);

	if (kling_fault("round_end"))
		ereport(ERROR, (errmsg("kling: injected fault at round_end (kling.fault_injection)")));
	kling_store_end_round();
	round->committed = true;
}

/* A round's transaction failed: report it, roll it back, forget its work. */
static void
kling_round_aborted(KlingRound *round)
{
	MemoryContextSwitchTo(W.round_context);
	EmitErrorReport();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(W.round_context);
	kling_forget_aborted_round(round);
	kling_keeper_aborted();
}

/*
 * What an aborted round forgets, because its rollback took it back: its
 * claims, the tasks it made final, its scans (expiry, retention, recount,
 * the schedule check: all due again).  Recovery counts as done only once it
 * commits.  Its decisions stay: they are made once.
 */
static void
kling_forget_aborted_round(KlingRound *round)
{
	round->creates = NIL;
	memset(&round->made_final, 0, sizeof(round->made_final));
	round->still_held = (Datum) 0;
	round->to_deliver = 0;
	round->pending_waits = false;
	round->send_due = 0;
	for (int i = 0; i < round->n; i++)
		round->results[i].decision.update.written = KLING_NOT_WRITTEN;
	W.counted_at = 0;
	W.expired_at = 0;
	W.retention_at = 0;
	W.checked_at = 0;
}

/*
 * Read the finished requests and decide what each means, once per round
 * (in the round's context, so that a rolled-back attempt keeps them).
 * Parsing a body can raise errors, hence inside the transaction.
 */
static void
kling_decide_results(KlingRound *round)
{
	MemoryContext old = MemoryContextSwitchTo(W.round_context);
	KlingHttpRequest **requests = palloc(Max(round->n, 1) * sizeof(KlingHttpRequest *));
	KlingRequestKind *kinds = palloc(Max(round->n, 1) * sizeof(KlingRequestKind));
	KlingResponse *responses = palloc(Max(round->n, 1) * sizeof(KlingResponse));
	KlingPolicyParams p;
	int			nread = 0;
	int			first = round->n;

	for (int i = 0; i < round->n; i++)
	{
		if (round->results[i].request == NULL)
			continue;			/* carried: decided in an earlier round */
		first = Min(first, i);
		requests[nread] = round->results[i].request;
		kinds[nread++] = round->results[i].sent->kind;
	}
	kling_read_responses(requests, kinds, responses, nread);

	p.poll_interval_ms = kling_poll_interval_ms;
	p.max_attempts = kling_max_attempts;
	p.hold_ms = kling_holding() ? W.hold_ms : kling_next_hold_ms(W.hold_ms, kling_poll_interval_ms);
	for (int i = 0; i < nread; i++)
	{
		KlingResult *r = &round->results[first + i];

		p.jitter = pg_prng_double(&pg_global_prng_state);
		kling_decide(r->sent, r->request->http_status, &responses[i], &p, &r->decision);
	}
	round->decided = true;
	MemoryContextSwitchTo(old);
}

/*
 * Phase 1: write the results that change their task, all in one statement,
 * or (isolate) each in a subtransaction of its own.
 */
static void
kling_write_results(KlingRound *round, bool isolate)
{
	KlingTaskUpdate *updates = palloc(Max(round->n, 1) * sizeof(KlingTaskUpdate));
	int			n = 0;

	for (int i = 0; i < round->n; i++)
		if (round->results[i].decision.write)
			updates[n++] = round->results[i].decision.update;

	if (isolate)
	{
		for (int i = 0; i < n; i++)
			kling_apply_isolated(&updates[i], &round->made_final);
	}
	else
		kling_store_apply_all(updates, n, &round->made_final);

	/* Back into the decisions: what became of each. */
	n = 0;
	for (int i = 0; i < round->n; i++)
		if (round->results[i].decision.write)
			round->results[i].decision.update = updates[n++];
}

/* Apply step for kling_try_in_subtransaction. */
typedef struct KlingApplyOne
{
	KlingTaskUpdate *update;
	KlingIds   *made_final;
} KlingApplyOne;

static void
kling_apply_step(void *arg)
{
	KlingApplyOne *one = arg;

	kling_store_apply_all(one->update, 1, one->made_final);
}

/*
 * Write one result in a subtransaction; if that fails, the task fails with
 * the reason instead.
 */
static void
kling_apply_isolated(KlingTaskUpdate *update, KlingIds *made_final)
{
	KlingApplyOne one = {update, made_final};
	int			nfinal = made_final->n;
	char	   *failure = kling_try_in_subtransaction(kling_apply_step, &one);

	if (failure == NULL)
		return;

	made_final->n = nfinal;		/* what the failed write made final is undone */
	ereport(WARNING,
			(errmsg("kling: could not record the response for task %lld: %s",
					(long long) update->id, failure)));
	update->status = "failed";
	update->result = NULL;
	update->video_url = NULL;
	/* Read after the transaction, when its log line is written. */
	update->error = MemoryContextStrdup(W.round_context,
										psprintf("could not record the provider's response: %s", failure));
	kling_store_apply_all(update, 1, made_final);
}

/*
 * Phase 2: housekeeping.  Recovery, expiry, retention, the learned
 * generation times, the check of the poll schedule, the count in flight,
 * the configuration.
 */
static void
kling_housekeeping(KlingRound *round)
{
	TimestampTz now = GetCurrentTimestamp();

	kling_recover(round);
	kling_check_subscribed();
	kling_check_account_limit();

	/* Expiry is due every tenth of the timeout, within those bounds. */
	if (TimestampDifferenceExceeds(W.expired_at, now,
								   Min(KLING_SCAN_MAX_MS,
									   Max(KLING_SCAN_MIN_MS, kling_task_timeout_ms / 10))))
	{
		kling_store_expire(kling_task_timeout_ms, &round->made_final);
		W.expired_at = now;
	}
	kling_apply_retention();
	kling_refresh_generation_times();
	kling_check_schedule();
	kling_count_in_flight(round);
	kling_check_config();
}

/* Whether a look last taken at *at (0: never) is due again; if so, now. */
static bool
kling_once_a_second(TimestampTz *at)
{
	TimestampTz now = GetCurrentTimestamp();

	if (*at != 0 && !TimestampDifferenceExceeds(*at, now, KLING_SCAN_MIN_MS))
		return false;
	*at = now;
	return true;
}

/*
 * Whether kling_tasks is a subscriber's copy, at most once a second (a
 * CREATE or ALTER SUBSCRIPTION wakes the worker); if so the worker stops
 * after this round.  The claim itself refuses such tasks anyway.
 */
static void
kling_check_subscribed(void)
{
	if (kling_once_a_second(&W.subscribed_checked_at))
		W.subscribed = kling_store_subscribed();
}

/*
 * This server's part of kling.max_in_flight: all of it, or its share on a
 * Citus cluster (cluster.c), looked at most once a second.
 */
static void
kling_check_account_limit(void)
{
	if (kling_once_a_second(&W.limit_checked_at))
		W.account_limit = kling_cluster_share(kling_max_in_flight);
}

/*
 * Take over from a worker that stopped: once at start, then again for the
 * tasks a user's open transaction held back, until there are none.
 */
static void
kling_recover(KlingRound *round)
{
	int			n;

	if (W.recovered && W.recover_held == (Datum) 0)
		return;
	n = kling_store_recover(W.recover_held, &round->still_held, &round->made_final);
	if (n > 0)
		ereport(LOG,
				(errmsg("kling: %d tasks were being sent when the server stopped; they failed with an unknown outcome", n)));
}

/*
 * Build the poll schedule from the table when the worker starts (or the
 * extension is created anew), and check it against the table now and then:
 * at least once a minute, and within a second of a user's cancel or of a
 * poll whose task was gone (deleted, truncated: there may be many more).
 */
static void
kling_check_schedule(void)
{
	Oid			extension = kling_store_extension();
	TimestampTz now = GetCurrentTimestamp();
	uint32		cancels = kling_cancels_committed();
	bool		rebuild = (extension != W.schedule_extension);

	if (!rebuild &&
		!TimestampDifferenceExceeds(W.checked_at, now,
									cancels != W.cancels_seen || W.schedule_stale
									? KLING_SCAN_MIN_MS : KLING_SCAN_MAX_MS))
		return;

	if (rebuild)
		kling_schedule_clear();
	kling_schedule_mark_unseen();
	kling_store_visit_at_provider(kling_schedule_task, NULL);
	(void) kling_schedule_drop_unseen();
	W.schedule_extension = extension;
	W.checked_at = now;
	W.cancels_seen = cancels;
	W.schedule_stale = false;
}

/* Put a task at the provider in the poll schedule (or mark it seen). */
static void
kling_schedule_task(const KlingAtProvider *t, void *arg)
{
	int			unused;

	kling_schedule_put(t->id, t->generation_id, kling_model_route(t->model),
					   t->generating, t->attempts,
					   kling_learned_first_poll(W.generation_times, t->model, t->duration,
												kling_poll_interval_ms, &unused),
					   t->next_attempt_at);
}

/*
 * The count of tasks in flight is kept up by hand, never below the truth:
 * a task cancelled by a user, or a create sent back to pending, is only
 * noticed by a recount.  A recount scans them all, so it is done once a
 * second while the count holds sends back, else once a minute.
 */
static void
kling_count_in_flight(KlingRound *round)
{
	TimestampTz now = GetCurrentTimestamp();

	W.in_flight -= round->made_final.n;
	if (TimestampDifferenceExceeds(W.counted_at, now,
								   W.budget_short ? KLING_SCAN_MIN_MS : KLING_SCAN_MAX_MS))
	{
		W.in_flight = kling_store_count_in_flight();
		W.counted_at = now;
	}
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
	List	   *keys = NIL;

	if (kling_retention_s <= 0 ||
		!TimestampDifferenceExceeds(W.retention_at, now, KLING_RETENTION_EVERY_MS))
		return;

	deleted = kling_store_delete_expired(kling_retention_s, KLING_RETENTION_BATCH, &keys);
	kling_keeper_forget_objects(keys);
	/* A full batch means more are due: come back next round, not in a minute. */
	if (deleted < KLING_RETENTION_BATCH)
		W.retention_at = now;
	if (deleted > 0)
		elog(DEBUG1, "kling: retention deleted %d final tasks", deleted);
}

/* Refresh the generation times learned from the history, every 10 s. */
static void
kling_refresh_generation_times(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(W.history_at, now, KLING_HISTORY_EVERY_MS))
		return;
	MemoryContextReset(W.history_context);
	W.generation_times = kling_store_generation_times(W.history_context);
	W.history_at = now;
}

/*
 * Hold all sending while a kling.* setting in the configuration files is
 * not valid (the server keeps the old value, or the default: nobody chose
 * it), or there is no API key.  Looked for at start and after each reload.
 */
static void
kling_check_config(void)
{
	if (!W.config_checked)
	{
		if (W.config_error != NULL)
			pfree(W.config_error);
		W.config_error = kling_settings_file_error(TopMemoryContext);
		W.config_checked = true;
	}
	if (W.config_error != NULL)
		kling_start_hold(W.config_error);
	else if (kling_effective_api_key()[0] == '\0')
		kling_start_hold("no API key: set kling.api_key, or AIMLAPI_API_KEY in the server's environment");
}

/*
 * Phase 3: claim pending tasks to send, within kling.max_in_flight and the
 * requests the worker keeps open, and build each one's request body before
 * the claim commits.  A task whose body cannot be built (its text cannot
 * be sent as UTF-8) fails now, with the reason, instead of staying
 * 'submitting'.
 */
static void
kling_claim_creates(KlingRound *round)
{
	int			want = Min(KLING_MAX_REQUESTS - kling_http_active(),
						   W.account_limit - W.in_flight);
	int			granted;
	ListCell   *lc;

	W.budget_short = false;
	if (kling_holding() || want <= 0)
	{
		W.budget_short = (want <= 0);
		return;
	}
	/* The budget is the account's: other databases may hold part of it. */
	granted = kling_budget_take(W.in_flight, want, W.account_limit);
	W.budget_short = (granted < want);
	if (granted == 0)
		return;
	foreach(lc, kling_store_claim_creates(granted))
	{
		KlingClaim *c = lfirst(lc);
		char	   *failure = kling_build_body(c);
		KlingTaskUpdate u = {0};

		if (failure == NULL)
		{
			/* The list outlives the transaction (and SPI): sent after it. */
			MemoryContext old = MemoryContextSwitchTo(W.round_context);

			round->creates = lappend(round->creates, c);
			MemoryContextSwitchTo(old);
			W.in_flight++;
			continue;
		}
		u.id = c->id;
		u.expect = KLING_EXPECT_SUBMITTING;
		u.status = "failed";
		u.error = psprintf("could not build the request: %s", failure);
		ereport(LOG, (errmsg("kling: task %lld failed: %s", (long long) c->id, u.error)));
		kling_store_apply_all(&u, 1, &round->made_final);
	}
}

/* Body step for kling_try_in_subtransaction. */
static void
kling_build_body_step(void *arg)
{
	KlingClaim *c = arg;
	MemoryContext old = MemoryContextSwitchTo(W.round_context);

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

/* Phase 5: when the next pending task is due to be sent. */
static void
kling_look_ahead(KlingRound *round)
{
	if (!kling_holding())
		round->pending_waits = kling_store_next_send(&round->send_due);
	if (!round->pending_waits)
		round->send_due = 0;
}

/*
 * After the round's transaction, once, whether or not it committed: the
 * decisions' effects, the poll schedule, the results to carry, the sends.
 */
static void
kling_after_round(KlingRound *round)
{
	kling_apply_effects(round);
	kling_follow_schedule(round);
	kling_carry_creates(round);
	kling_send(round);
	if (round->committed)
	{
		if (kling_keeper_committed())
			round->to_deliver++;
		W.recovered = true;
		if (W.recover_held != (Datum) 0)
			pfree(DatumGetPointer(W.recover_held));
		W.recover_held = round->still_held == (Datum) 0 ? (Datum) 0
			: datumCopy(round->still_held, false, -1);
	}
	if (round->to_deliver > 0)
		kling_wake_deliverer();
	if (W.extension_present)
		kling_keep_deliverer();
	kling_plan_next_round(round);
	kling_budget_publish(W.in_flight, round->pending_waits);

	for (int i = 0; i < round->n; i++)
	{
		if (round->results[i].request == NULL)
			continue;
		kling_http_free(round->results[i].request);
	}

	W.stats.last_round_at = GetCurrentTimestamp();
	W.stats.requests_in_flight = kling_http_active();
	strlcpy(W.stats.state, kling_holding() ? W.hold_reason : "running",
			sizeof(W.stats.state));
	kling_stats_publish(&W.stats);
	if (!W.extension_present)
		kling_worker_rest(KLING_REST_NO_EXTENSION);
	else if (W.subscribed && round->committed)
		kling_worker_rest(KLING_REST_SUBSCRIBED);
	else if (!W.announced)
		kling_worker_announce();
}

/*
 * Say in the log, once, that the worker serves its database; a worker that
 * finds no extension at its first look leaves without a word.
 */
static void
kling_worker_announce(void)
{
	char	   *name;

	StartTransactionCommand();
	name = get_database_name(MyDatabaseId);
	ereport(LOG,
			(errmsg("kling worker started for database \"%s\"", name ? name : "?")));
	CommitTransactionCommand();
	W.announced = true;
}

/*
 * Stop for good: nothing to serve here.  The launcher starts no worker in
 * this database again until a CREATE EXTENSION kling there.
 */
static void
kling_worker_rest(KlingRest rest)
{
	/* The extension came back during the round: look again instead. */
	if (!kling_shmem_rest(rest, W.extension_generation))
	{
		W.next_due = GetCurrentTimestamp();
		return;
	}
	kling_stop_deliverer();
	kling_keeper_stop();
	if (W.announced)
		ereport(LOG,
				(errmsg("kling worker stopped: %s",
						rest == KLING_REST_SUBSCRIBED
						? "kling_tasks here is a logical replication subscriber's copy; its tasks are sent by the publisher"
						: "the extension is no longer in its database")));
	proc_exit(0);
}

/* The effects of this round's decisions (carried ones had theirs). */
static void
kling_apply_effects(KlingRound *round)
{
	for (int i = 0; i < round->n; i++)
	{
		KlingResult *r = &round->results[i];
		KlingEffects *e = &r->decision.effects;
		KlingTaskUpdate *u = &r->decision.update;

		if (r->request == NULL)
			continue;
		W.stats.requests_failed += e->request_failed;
		W.stats.rate_limited += e->rate_limited;
		W.stats.requests_retried += e->retried;
		if (e->error != NULL)
		{
			strlcpy(W.stats.last_error, e->error, sizeof(W.stats.last_error));
			W.stats.last_error_at = GetCurrentTimestamp();
		}
		if (e->account_works)
			W.hold_ms = 0;
		if (e->hold != NULL)
			kling_start_hold(e->hold);
		if (u->written == KLING_WRITTEN && kling_update_is_final(u) && u->error != NULL)
			ereport(LOG, (errmsg("kling: task %lld failed: %s", (long long) u->id, u->error)));
	}
}

/*
 * The poll schedule follows what was written: a task accepted joins it, a
 * task made final or gone leaves it, the others are due again.  Polls of a
 * round that did not commit are simply made again soon.
 */
static void
kling_follow_schedule(KlingRound *round)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz soon = TimestampTzPlusMilliseconds(now, Min(kling_poll_interval_ms, KLING_RETRY_SOON_MS));

	for (int i = 0; i < round->n; i++)
	{
		KlingResult *r = &round->results[i];
		KlingTaskUpdate *u = &r->decision.update;
		TimestampTz next = TimestampTzPlusMilliseconds(now, u->next_attempt_ms);
		KlingPollEntry *e;

		if (r->sent->kind == KLING_REQUEST_CREATE)
		{
			if (u->written == KLING_WRITTEN && u->generation_id != NULL && !kling_update_is_final(u))
				kling_schedule_put(u->id, u->generation_id, r->sent->route,
								   strcmp(u->status, "generating") == 0,
								   0, r->sent->learned, next);
			continue;
		}
		if ((e = kling_schedule_find(u->id)) == NULL)
			continue;
		if (!round->committed || u->written == KLING_HELD)
			kling_schedule_set_due(e, soon);
		else if (!r->decision.write)
			kling_schedule_set_due(e, next);
		else if (u->written == KLING_NOT_WRITTEN || kling_update_is_final(u))
		{
			W.schedule_stale |= (u->written == KLING_NOT_WRITTEN);
			kling_schedule_remove(u->id);
		}
		else
		{
			if (u->status != NULL)
				e->generating = (strcmp(u->status, "generating") == 0);
			e->attempts = u->attempts;
			kling_schedule_set_due(e, next);
		}
	}
	for (int i = 0; i < round->made_final.n; i++)
		kling_schedule_remove(round->made_final.ids[i]);
	if (!W.extension_present)
	{
		kling_schedule_clear();
		W.schedule_extension = InvalidOid;
	}
}

/* Whether a result is a create's that must be carried to the next round. */
static bool
kling_must_carry(KlingRound *round, KlingResult *r)
{
	return r->sent->kind == KLING_REQUEST_CREATE && W.extension_present &&
		(!round->committed || r->decision.update.written == KLING_HELD);
}

/*
 * Carry to the next round the results of creates that could not be written
 * (a user's open transaction holds the task, or the round failed): a
 * generation id must not be lost.  Copied out of the round's context.
 */
static void
kling_carry_creates(KlingRound *round)
{
	MemoryContext context = NULL;
	List	   *carried = NIL;

	for (int i = 0; i < round->n; i++)
	{
		KlingResult *r = &round->results[i];
		KlingTaskUpdate *u;
		KlingResult *copy;
		MemoryContext old;

		if (!kling_must_carry(round, r))
			continue;
		if (context == NULL)
			context = AllocSetContextCreate(TopMemoryContext, "kling carried results",
											ALLOCSET_SMALL_SIZES);
		old = MemoryContextSwitchTo(context);
		copy = palloc(sizeof(KlingResult));
		*copy = *r;
		copy->request = NULL;
		copy->sent = palloc(sizeof(KlingSent));
		*copy->sent = *r->sent;
		u = &copy->decision.update;
		u->status = u->status ? pstrdup(u->status) : NULL;
		u->generation_id = u->generation_id ? pstrdup(u->generation_id) : NULL;
		u->video_url = u->video_url ? pstrdup(u->video_url) : NULL;
		u->result = u->result ? (Jsonb *) PG_DETOAST_DATUM_COPY(JsonbPGetDatum(u->result)) : NULL;
		u->error = u->error ? pstrdup(u->error) : NULL;
		memset(&copy->decision.effects, 0, sizeof(KlingEffects));
		carried = lappend(carried, copy);
		MemoryContextSwitchTo(old);
	}

	/* The old carried results were copied into the round: free them now. */
	if (W.carried_context != NULL)
		MemoryContextDelete(W.carried_context);
	W.carried_context = context;
	W.carried = carried;
	for (int i = 0; i < round->n; i++)
		if (round->results[i].request != NULL)
			pfree(round->results[i].sent);
}

/*
 * Send the claimed creates, then the polls that are due, as far as the
 * requests the worker keeps open allow.  A request that cannot start is
 * done at once, and decided in the next round like any other.
 */
static void
kling_send(KlingRound *round)
{
	int			room = KLING_MAX_REQUESTS - kling_http_active();
	int			sent = 0;
	TimestampTz now = GetCurrentTimestamp();
	KlingPollEntry *e;
	ListCell   *lc;

	foreach(lc, round->creates)
	{
		KlingClaim *c = lfirst(lc);
		KlingSent  *s = MemoryContextAllocZero(W.sent_context, sizeof(KlingSent));

		s->task_id = c->id;
		s->kind = KLING_REQUEST_CREATE;
		s->route = kling_model_route(kling_opt_text(c->opts, "model"));
		s->attempts = c->attempts;
		s->learned = kling_learned_first_poll(W.generation_times, kling_opt_text(c->opts, "model"),
											  kling_opt_text(c->opts, "duration"),
											  kling_poll_interval_ms, &s->first_poll_ms);
		(void) kling_http_start(kling_create_url(kling_base_url, s->route), c->body, true, s);
		sent++;
	}

	/* A stale schedule may hold thousands of deleted tasks: check it first. */
	while (W.extension_present && !kling_holding() && !W.schedule_stale && sent < room &&
		   (e = kling_schedule_take_due(now)) != NULL)
	{
		KlingSent  *s = MemoryContextAllocZero(W.sent_context, sizeof(KlingSent));

		s->task_id = e->id;
		s->kind = KLING_REQUEST_POLL;
		s->route = e->route;
		s->attempts = e->attempts;
		s->generating = e->generating;
		s->learned = e->learned;
		(void) kling_http_start(kling_poll_url(kling_base_url, e->route, e->generation_id),
								NULL, false, s);
		sent++;
	}

	W.stats.requests_sent += sent;
	if (sent > 0)
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("kling: %d requests in flight", kling_http_active()));
}

/*
 * When the loop should come back: the next due poll or send.  Work that
 * was due when the claims looked (SQL's now() is the round's start) but
 * could not be claimed (rows locked by others, or every request slot busy)
 * must not make the loop spin: look again a little later.  Finished
 * requests wake the loop anyway.
 */
static void
kling_plan_next_round(KlingRound *round)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz soon = TimestampTzPlusMilliseconds(now, Min(kling_poll_interval_ms, KLING_RETRY_SOON_MS));

	W.next_due = 0;
	if (!W.extension_present)
		return;
	kling_due_by(W.schedule_stale ? TimestampTzPlusMilliseconds(W.checked_at, KLING_SCAN_MIN_MS)
				 : kling_schedule_next_due());
	if (round->keep_due != 0)
		kling_due_by(round->keep_due);
	if (round->send_due != 0)
		kling_due_by(round->send_due <= now && round->creates == NIL ? soon : round->send_due);

	/*
	 * Pending tasks held back by the budget wait for a place: another
	 * database's worker wakes this one when it frees some, but a place freed
	 * by a user's cancel shows only in a recount, so come back for one even
	 * if nothing else is due.  So do results and recoveries a
	 * user's transaction held back, and a round that failed.
	 */
	if (!kling_holding() && W.budget_short && round->pending_waits)
		kling_due_by(TimestampTzPlusMilliseconds(W.counted_at, KLING_SCAN_MIN_MS));
	if (W.carried != NIL || W.recover_held != (Datum) 0 || !round->committed)
		kling_due_by(soon);
}

/* Come back by this time, if not sooner (0: no need). */
static void
kling_due_by(TimestampTz when)
{
	if (when != 0 && (W.next_due == 0 || when < W.next_due))
		W.next_due = when;
}

/*
 * Make sure the delivery process runs (it runs every write-back and
 * callback, so that no user code runs here): start it if it is not
 * attached, at most every few seconds, and say once if no slot is free.
 */
static void
kling_keep_deliverer(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (kling_shmem_deliverer_attached())
		return;
	if (!TimestampDifferenceExceeds(W.deliverer_tried_at, now, KLING_DELIVERER_RESTART_MS))
	{
		/* Too soon to start it again: come back when it is not. */
		kling_due_by(TimestampTzPlusMilliseconds(W.deliverer_tried_at, KLING_DELIVERER_RESTART_MS));
		return;
	}
	W.deliverer_tried_at = now;
	if (kling_start_deliverer(MyDatabaseId))
		W.said_no_slot = false;
	else if (!W.said_no_slot)
	{
		ereport(WARNING,
				(errmsg("kling: could not start the delivery process: no background worker slot free"),
				 errdetail("Write-backs and callbacks wait until one is."),
				 errhint("Raise max_worker_processes.")));
		W.said_no_slot = true;
	}
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
	snprintf(W.hold_reason, sizeof(W.hold_reason), "holding: %.*s",
			 colon ? (int) (colon - reason) : (int) strlen(reason), reason);

	W.hold_ms = kling_next_hold_ms(W.hold_ms, kling_poll_interval_ms);
	W.hold_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), W.hold_ms);
	/* The account is refused, not this database: every worker holds. */
	kling_account_hold(W.hold_until, W.hold_reason);
	ereport(WARNING,
			(errmsg("kling: %s", reason),
			 errdetail("No task is sent or polled for %d ms; tasks keep their place.",
					   W.hold_ms)));
}

/* Whether sending is held now, by this worker or another database's. */
static bool
kling_holding(void)
{
	TimestampTz now = GetCurrentTimestamp();
	char		reason[sizeof(W.hold_reason)];
	TimestampTz shared;

	if (W.hold_until != 0 && now < W.hold_until)
		return true;
	shared = kling_account_held_until(reason, sizeof(reason));
	if (shared <= now)
		return false;
	W.hold_until = shared;
	strlcpy(W.hold_reason, reason, sizeof(W.hold_reason));
	return true;
}

/*
 * Whether a hold has just run out: the held tasks are due again, so a round
 * must look at them even if nothing else woke the loop.
 */
static bool
kling_hold_ended(void)
{
	if (W.hold_until == 0 || kling_holding())
		return false;
	W.hold_until = 0;
	return true;
}

/* A top-level option as text (a number as it is written), or NULL. */
static const char *
kling_opt_text(Jsonb *opts, const char *key)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&opts->root, key, strlen(key), &v) == NULL)
		return NULL;
	if (v.type == jbvString)
		return pnstrdup(v.val.string.val, v.val.string.len);
	if (v.type == jbvNumeric)
		return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
	return NULL;
}
