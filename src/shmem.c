/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared memory of the kling extension: a slot per served database,
 *		with its worker's and delivery process's latches, so that a backend
 *		can wake them when it commits new work, and the launcher's latch.
 *
 * A backend that enqueues or cancels a task asks to wake the worker of its
 * database; the wake happens in a transaction callback at commit, so a
 * rolled-back transaction never wakes it and a committed one does at once.
 * One wake stands for all commits until the worker takes it at the start
 * of its next round: under a stream of commits the worker is signalled
 * about once a round, not once a commit, and not at all while it holds.
 * Likewise a transaction that makes tasks final wakes every kling_wait at
 * its commit, through a condition variable.
 *
 * The launcher assigns a slot to a database before it starts a worker
 * there, and frees it when the database is gone or its worker stopped for
 * good (no extension there); kling.max_databases slots exist.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "settings.h"
#include "shmem_internal.h"
#include "wait_events.h"

/* How long a statement that needs a database alone keeps its worker away. */
#define KLING_PAUSE_MAX_MS (10 * 60 * 1000)

KlingSharedState *kling_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static KlingDatabaseSlot *my_slot = NULL;	/* a worker's or deliverer's */
static bool wake_requested = false;
static bool cancel_requested = false;
static bool launcher_wake_requested = false;
static bool final_announced = false;
static bool xact_callback_registered = false;

static Size kling_shmem_size(void);
static void kling_shmem_request(void);
static void kling_shmem_startup(void);
static void kling_shmem_detach_worker(int code, Datum arg);
static void kling_shmem_detach_deliverer(int code, Datum arg);
static void kling_shmem_detach_launcher(int code, Datum arg);
static void kling_xact_callback(XactEvent event, void *arg);
static void kling_watch_commit(void);
static void kling_request_probe(Oid database_id);
static void kling_view_of(KlingDatabaseSlot *slot, KlingSlotView *view);

/*
 * Install the hooks that reserve and create the shared state.  Called from
 * _PG_init while shared_preload_libraries is being processed.
 */
void
kling_shmem_register(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = kling_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = kling_shmem_startup;
}

static Size
kling_shmem_size(void)
{
	return add_size(offsetof(KlingSharedState, slots),
					mul_size(kling_max_databases, sizeof(KlingDatabaseSlot)));
}

/* Reserve room for the shared state. */
static void
kling_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(kling_shmem_size()));
}

/* Create or attach to the shared state. */
static void
kling_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kling_shared = ShmemInitStruct("kling", kling_shmem_size(), &found);
	if (!found)
	{
		memset(kling_shared, 0, kling_shmem_size());
		SpinLockInit(&kling_shared->mutex);
		ConditionVariableInit(&kling_shared->task_final);
		pg_atomic_init_u32(&kling_shared->cancels, 0);
		kling_shared->nslots = kling_max_databases;
		for (int i = 0; i < kling_shared->nslots; i++)
			pg_atomic_init_u32(&kling_shared->slots[i].wake_pending, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The slot of a database, or NULL.  Called with the mutex held. */
KlingDatabaseSlot *
kling_slot_of(Oid database_id)
{
	for (int i = 0; i < kling_shared->nslots; i++)
		if (kling_shared->slots[i].database_id == database_id)
			return &kling_shared->slots[i];
	return NULL;
}

/* The slot of the calling worker or delivery process (set as it attaches). */
KlingDatabaseSlot *
kling_own_slot(void)
{
	Assert(my_slot != NULL);
	return my_slot;
}

/* ---- the launcher ---- */

/* Publish the launcher's latch; withdrawn when it exits. */
void
kling_shmem_attach_launcher(void)
{
	SpinLockAcquire(&kling_shared->mutex);
	kling_shared->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&kling_shared->mutex);
	on_shmem_exit(kling_shmem_detach_launcher, (Datum) 0);
}

static void
kling_shmem_detach_launcher(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (kling_shared->launcher_latch == &MyProc->procLatch)
		kling_shared->launcher_latch = NULL;
	SpinLockRelease(&kling_shared->mutex);
}

/* What the launcher sees of a slot.  Called with the mutex held. */
static void
kling_view_of(KlingDatabaseSlot *slot, KlingSlotView *view)
{
	view->database_id = slot->database_id;
	view->attached = (slot->worker_pid != 0 || slot->delivery_pid != 0);
	view->worker_runs = (slot->worker_pid != 0);
	view->rest = slot->rest;
	view->paused_until = slot->paused_until;
}

/* Copy what the launcher needs of the slots in use; returns how many. */
int
kling_slots_read(KlingSlotView *views, int max)
{
	int			n = 0;

	SpinLockAcquire(&kling_shared->mutex);
	for (int i = 0; i < kling_shared->nslots && n < max; i++)
	{
		KlingDatabaseSlot *slot = &kling_shared->slots[i];

		if (!OidIsValid(slot->database_id))
			continue;
		kling_view_of(slot, &views[n++]);
	}
	SpinLockRelease(&kling_shared->mutex);
	return n;
}

/* What the launcher needs of one database's slot; false if it has none. */
bool
kling_slot_read(Oid database_id, KlingSlotView *view)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
		kling_view_of(slot, view);
	SpinLockRelease(&kling_shared->mutex);
	return slot != NULL;
}

/*
 * Give a database a slot (it keeps one it has).  Returns false if all
 * kling.max_databases slots are taken.
 */
bool
kling_slot_assign(Oid database_id)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot == NULL && (slot = kling_slot_of(InvalidOid)) != NULL)
	{
		/* A free slot has no process in it; the rest is the last one's. */
		slot->database_id = database_id;
		memset(&slot->stats, 0, sizeof(slot->stats));
		slot->delivering = 0;
		slot->rest = KLING_SERVING;
		slot->paused_until = 0;
		slot->in_flight = 0;
		slot->wants_more = false;
	}
	SpinLockRelease(&kling_shared->mutex);
	return slot != NULL;
}

/* Free a database's slot, unless a process still runs in it. */
void
kling_slot_free(Oid database_id)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL && slot->worker_pid == 0 && slot->delivery_pid == 0)
		slot->database_id = InvalidOid;
	SpinLockRelease(&kling_shared->mutex);
}

/* A CREATE EXTENSION kling committed in the database: its worker may run. */
void
kling_slot_unrest(Oid database_id)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
		slot->rest = KLING_SERVING;
	SpinLockRelease(&kling_shared->mutex);
}

/*
 * Take the databases where CREATE EXTENSION kling committed since the last
 * call; *all is set if more did than were kept.
 */
int
kling_probe_requests(Oid *databases, int max, bool *all)
{
	int			n;

	SpinLockAcquire(&kling_shared->mutex);
	n = Min(kling_shared->nprobe, max);
	memcpy(databases, kling_shared->probe, n * sizeof(Oid));
	*all = kling_shared->probe_overflow || kling_shared->nprobe > max;
	kling_shared->nprobe = 0;
	kling_shared->probe_overflow = false;
	SpinLockRelease(&kling_shared->mutex);
	return n;
}

static void
kling_request_probe(Oid database_id)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
		slot->extension_generation++;
	if (kling_shared->nprobe < KLING_PROBE_QUEUE)
		kling_shared->probe[kling_shared->nprobe++] = database_id;
	else
		kling_shared->probe_overflow = true;
	SpinLockRelease(&kling_shared->mutex);
}

/* Ask the worker and the delivery process of a database to exit. */
void
kling_stop_database(Oid database_id)
{
	KlingDatabaseSlot *slot;
	pid_t		pids[2] = {0, 0};

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
	{
		pids[0] = slot->worker_pid;
		pids[1] = slot->delivery_pid;
	}
	SpinLockRelease(&kling_shared->mutex);
	for (int i = 0; i < 2; i++)
		if (pids[i] != 0)
			(void) kill(pids[i], SIGTERM);
}

/* Set the launcher's latch. */
void
kling_wake_launcher(void)
{
	Latch	   *launcher;

	SpinLockAcquire(&kling_shared->mutex);
	launcher = kling_shared->launcher_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (launcher != NULL)
		SetLatch(launcher);
}

/* ---- a statement that needs a database alone ---- */

/*
 * Keep kling's processes out of a database while a statement that needs
 * it alone runs (DROP DATABASE, ALTER DATABASE ... RENAME, ...): stop them
 * and wait, up to timeout_ms, until they are gone.  Returns whether they
 * are.  kling_resume_database() ends the pause; it also ends by itself.
 */
bool
kling_pause_database(Oid database_id, int timeout_ms)
{
	KlingDatabaseSlot *slot;
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), timeout_ms);
	bool		gone = true;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
		slot->paused_until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), KLING_PAUSE_MAX_MS);
	SpinLockRelease(&kling_shared->mutex);
	if (slot == NULL)
		return true;

	kling_stop_database(database_id);
	for (;;)
	{
		SpinLockAcquire(&kling_shared->mutex);
		gone = (slot->database_id != database_id ||
				(slot->worker_pid == 0 && slot->delivery_pid == 0));
		SpinLockRelease(&kling_shared->mutex);
		if (gone || GetCurrentTimestamp() >= deadline)
			return gone;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* End a pause: the launcher serves the database again, if it still exists. */
void
kling_resume_database(Oid database_id)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(database_id);
	if (slot != NULL)
		slot->paused_until = 0;
	SpinLockRelease(&kling_shared->mutex);
	kling_wake_launcher();
}

/* ---- a worker and a delivery process ---- */

/*
 * Publish the calling worker's latch in its database's slot so that
 * backends can wake it; withdrawn again when the worker exits.  Returns
 * false, publishing nothing, if the database has no slot (the launcher
 * gave it up) or another worker already serves it.
 */
bool
kling_shmem_attach_worker(void)
{
	KlingDatabaseSlot *slot;

	if (kling_shared == NULL)
		elog(ERROR, "kling shared memory is not initialized");

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(MyDatabaseId);
	if (slot != NULL && slot->worker_latch == NULL)
	{
		slot->worker_latch = &MyProc->procLatch;
		slot->worker_pid = MyProcPid;
		slot->rest = KLING_SERVING;
		slot->in_flight = 0;
		slot->wants_more = false;
	}
	else
		slot = NULL;
	SpinLockRelease(&kling_shared->mutex);
	if (slot == NULL)
		return false;
	my_slot = slot;
	/* The first round looks at the table anyway. */
	pg_atomic_write_u32(&my_slot->wake_pending, 0);

	before_shmem_exit(kling_shmem_detach_worker, (Datum) 0);
	return true;
}

/* Withdraw the worker's latch and budget at exit. */
static void
kling_shmem_detach_worker(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (my_slot->worker_latch == &MyProc->procLatch)
	{
		my_slot->worker_latch = NULL;
		my_slot->worker_pid = 0;
		my_slot->stats.pid = 0;
		my_slot->in_flight = 0;
		my_slot->wants_more = false;
	}
	SpinLockRelease(&kling_shared->mutex);
	kling_wake_launcher();
}

/* How many CREATE EXTENSION kling have committed here (it wraps). */
uint32
kling_shmem_extension_generation(void)
{
	uint32		generation;

	SpinLockAcquire(&kling_shared->mutex);
	generation = my_slot->extension_generation;
	SpinLockRelease(&kling_shared->mutex);
	return generation;
}

/*
 * Say why this worker stops for good; the launcher does not start another
 * in its database until a CREATE EXTENSION kling commits there.  Refused
 * (false) if one has committed since the worker read the generation, before
 * its look: what it saw is already out of date.
 */
bool
kling_shmem_rest(KlingRest rest, uint32 generation)
{
	bool		current;

	SpinLockAcquire(&kling_shared->mutex);
	current = (my_slot->extension_generation == generation);
	if (current)
		my_slot->rest = rest;
	SpinLockRelease(&kling_shared->mutex);
	return current;
}

/* Ask the delivery process of the worker's database to exit. */
void
kling_stop_deliverer(void)
{
	pid_t		pid;

	SpinLockAcquire(&kling_shared->mutex);
	pid = my_slot->delivery_pid;
	SpinLockRelease(&kling_shared->mutex);
	if (pid != 0)
		(void) kill(pid, SIGTERM);
}

/*
 * Publish the delivery process's latch, so that the worker can wake it;
 * withdrawn at exit.  Returns false if another one already did, or the
 * database has no slot.  *stuck gets the task whose delivery a previous
 * process died in, or 0.
 */
bool
kling_shmem_attach_deliverer(int64 *stuck)
{
	KlingDatabaseSlot *slot;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(MyDatabaseId);
	if (slot != NULL && slot->delivery_latch == NULL)
	{
		slot->delivery_latch = &MyProc->procLatch;
		slot->delivery_pid = MyProcPid;
		*stuck = slot->delivering;
	}
	else
		slot = NULL;
	SpinLockRelease(&kling_shared->mutex);
	if (slot == NULL)
		return false;
	my_slot = slot;
	before_shmem_exit(kling_shmem_detach_deliverer, (Datum) 0);
	return true;
}

/* Withdraw the delivery process's latch at exit; "delivering" stays. */
static void
kling_shmem_detach_deliverer(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (my_slot->delivery_latch == &MyProc->procLatch)
	{
		my_slot->delivery_latch = NULL;
		my_slot->delivery_pid = 0;
	}
	SpinLockRelease(&kling_shared->mutex);
	kling_wake_launcher();
}

/* Say which task's delivery runs now (0: none), in case the process dies. */
void
kling_shmem_set_delivering(int64 id)
{
	SpinLockAcquire(&kling_shared->mutex);
	my_slot->delivering = id;
	SpinLockRelease(&kling_shared->mutex);
}

/* Whether a delivery process runs in the worker's database. */
bool
kling_shmem_deliverer_attached(void)
{
	bool		attached;

	SpinLockAcquire(&kling_shared->mutex);
	attached = (my_slot->delivery_latch != NULL);
	SpinLockRelease(&kling_shared->mutex);
	return attached;
}

/* Wake the delivery process: there is work for it. */
void
kling_wake_deliverer(void)
{
	Latch	   *latch;

	SpinLockAcquire(&kling_shared->mutex);
	latch = my_slot->delivery_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * The worker takes the pending wake as it begins a round: a commit after
 * this sets its latch again.  The exchange is a full barrier, so the round's
 * snapshot, taken later, sees every commit whose wake was taken here.
 */
void
kling_take_wake(void)
{
	(void) pg_atomic_exchange_u32(&my_slot->wake_pending, 0);
}

/* Publish the worker's figures; it does so once a round. */
void
kling_stats_publish(const KlingWorkerStats *stats)
{
	SpinLockAcquire(&kling_shared->mutex);
	my_slot->stats = *stats;
	SpinLockRelease(&kling_shared->mutex);
}

/* ---- backends ---- */

/*
 * Copy the figures of the worker serving this database.  Returns false
 * when none runs.
 */
bool
kling_stats_read(KlingWorkerStats *stats)
{
	KlingDatabaseSlot *slot;

	memset(stats, 0, sizeof(*stats));
	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(MyDatabaseId);
	if (slot != NULL && slot->worker_pid != 0)
		*stats = slot->stats;
	SpinLockRelease(&kling_shared->mutex);
	return stats->pid != 0;
}

/* Have this process's commits and aborts seen by kling_xact_callback. */
static void
kling_watch_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(kling_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/* Ask for the worker to be woken when the current transaction commits. */
void
kling_wake_worker_at_commit(void)
{
	kling_watch_commit();
	wake_requested = true;
}

/*
 * Ask for the worker to be woken when the current transaction commits,
 * because it cancels tasks: the worker drops them from its poll schedule.
 */
void
kling_note_cancel_at_commit(void)
{
	kling_wake_worker_at_commit();
	cancel_requested = true;
}

/* How many transactions that cancel tasks have committed (it wraps). */
uint32
kling_cancels_committed(void)
{
	return pg_atomic_read_u32(&kling_shared->cancels);
}

/*
 * Ask for the launcher to look at this database when the current
 * transaction commits, because it creates the extension (or drops it: its
 * worker is woken too, and finds it gone).
 */
void
kling_wake_launcher_at_commit(void)
{
	kling_wake_worker_at_commit();
	launcher_wake_requested = true;
}

/*
 * A COMMIT PREPARED committed, in this database: its transaction's wakes
 * were dropped at PREPARE (it might have been rolled back), so wake the
 * worker now, and have the launcher look at the database in case it
 * created the extension (Citus propagates CREATE EXTENSION that way).
 */
void
kling_wake_after_commit_prepared(void)
{
	KlingDatabaseSlot *slot;
	Latch	   *latch = NULL;

	kling_request_probe(MyDatabaseId);
	kling_wake_launcher();
	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(MyDatabaseId);
	if (slot != NULL)
		latch = slot->worker_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/*
 * Ask for kling_wait callers to be woken when the current transaction
 * commits, because it made tasks final.
 */
void
kling_announce_final_at_commit(void)
{
	kling_watch_commit();
	final_announced = true;
}

/* Sleep until some task becomes final or timeout_ms passes. */
void
kling_sleep_until_final(long timeout_ms)
{
	(void) ConditionVariableTimedSleep(&kling_shared->task_final, timeout_ms,
									   kling_wait_event(KLING_WAIT_TASK_FINAL));
}

/* Stop sleeping on the condition variable (after the last sleep). */
void
kling_stop_sleeping(void)
{
	ConditionVariableCancelSleep();
}

/*
 * At commit, set the latch of the worker serving this database.  The
 * callback runs after the commit is visible to others, so the worker finds
 * the new rows when it looks.
 */
static void
kling_xact_callback(XactEvent event, void *arg)
{
	KlingDatabaseSlot *slot;
	Latch	   *latch = NULL;

	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			wake_requested = false;
			cancel_requested = false;
			launcher_wake_requested = false;
			final_announced = false;
			return;
		default:
			return;
	}

	if (final_announced)
		ConditionVariableBroadcast(&kling_shared->task_final);
	final_announced = false;
	if (cancel_requested)
		pg_atomic_fetch_add_u32(&kling_shared->cancels, 1);
	cancel_requested = false;
	if (launcher_wake_requested)
	{
		kling_request_probe(MyDatabaseId);
		kling_wake_launcher();
	}
	launcher_wake_requested = false;

	if (!wake_requested)
		return;
	wake_requested = false;

	SpinLockAcquire(&kling_shared->mutex);
	slot = kling_slot_of(MyDatabaseId);
	if (slot != NULL)
		latch = slot->worker_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (latch == NULL)
		return;

	/*
	 * A wake is already pending: the worker's next round sees this commit.
	 * The barrier orders the commit before the read, as kling_take_wake
	 * orders its exchange before the round's snapshot.
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&slot->wake_pending) == 0 &&
		pg_atomic_exchange_u32(&slot->wake_pending, 1) == 0)
		SetLatch(latch);
}
