/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		Shared memory of the kling extension: where the worker's latch is,
 *		so that a backend can wake it when it commits new work.
 *
 * A backend that enqueues or cancels a task asks to wake the worker; the
 * wake happens in a transaction callback at commit, so a rolled-back
 * transaction never wakes it and a committed one does at once.  One wake
 * stands for all commits until the worker takes it at the start of its next
 * round: under a stream of commits the worker is signalled about once a
 * round, not once a commit, and not at all while it holds.  Likewise a
 * transaction that makes tasks final wakes every kling_wait at its commit,
 * through a condition variable.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/condition_variable.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"

#include "shmem.h"
#include "wait_events.h"

typedef struct KlingSharedState
{
	slock_t		mutex;
	Oid			database_id;	/* database the worker serves */
	Latch	   *worker_latch;	/* NULL while no worker runs */
	pg_atomic_uint32 wake_pending;	/* a commit set the latch since the
									 * worker's last round began */
	ConditionVariable task_final;	/* broadcast when tasks become final */
	KlingWorkerStats stats;		/* under mutex */
	Latch	   *delivery_latch; /* NULL while no delivery process runs */
	int64		delivering;		/* the task whose delivery runs now, or 0;
								 * left set by a process that died in it */
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	pg_atomic_uint32 cancels;	/* bumped at each commit that cancels */
} KlingSharedState;

static KlingSharedState *kling_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_requested = false;
static bool cancel_requested = false;
static bool launcher_wake_requested = false;
static bool final_announced = false;
static bool xact_callback_registered = false;

static void kling_shmem_request(void);
static void kling_shmem_startup(void);
static void kling_shmem_detach_worker(int code, Datum arg);
static void kling_shmem_detach_deliverer(int code, Datum arg);
static void kling_shmem_detach_launcher(int code, Datum arg);
static void kling_xact_callback(XactEvent event, void *arg);
static void kling_watch_commit(void);

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

/* Reserve room for the shared state. */
static void
kling_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(KlingSharedState)));
}

/* Create or attach to the shared state. */
static void
kling_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	kling_shared = ShmemInitStruct("kling", sizeof(KlingSharedState), &found);
	if (!found)
	{
		SpinLockInit(&kling_shared->mutex);
		kling_shared->database_id = InvalidOid;
		kling_shared->worker_latch = NULL;
		pg_atomic_init_u32(&kling_shared->wake_pending, 0);
		ConditionVariableInit(&kling_shared->task_final);
		memset(&kling_shared->stats, 0, sizeof(KlingWorkerStats));
		kling_shared->delivery_latch = NULL;
		kling_shared->delivering = 0;
		kling_shared->launcher_latch = NULL;
		pg_atomic_init_u32(&kling_shared->cancels, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Publish the calling worker's latch so that backends can wake it; it is
 * withdrawn again when the worker exits.  Returns false, publishing
 * nothing, if another worker has already done so: there is one worker.
 */
bool
kling_shmem_attach_worker(void)
{
	bool		first;

	if (kling_shared == NULL)
		elog(ERROR, "kling shared memory is not initialized");

	SpinLockAcquire(&kling_shared->mutex);
	first = (kling_shared->worker_latch == NULL);
	if (first)
	{
		kling_shared->database_id = MyDatabaseId;
		kling_shared->worker_latch = &MyProc->procLatch;
	}
	SpinLockRelease(&kling_shared->mutex);
	if (!first)
		return false;
	/* The first round looks at the table anyway. */
	pg_atomic_write_u32(&kling_shared->wake_pending, 0);

	before_shmem_exit(kling_shmem_detach_worker, (Datum) 0);
	return true;
}

/*
 * Publish the delivery process's latch, so that the worker can wake it;
 * withdrawn at exit.  Returns false if another one already did.  *stuck
 * gets the task whose delivery a previous process died in, or 0.
 */
bool
kling_shmem_attach_deliverer(int64 *stuck)
{
	bool		first;

	SpinLockAcquire(&kling_shared->mutex);
	first = (kling_shared->delivery_latch == NULL);
	if (first)
	{
		kling_shared->delivery_latch = &MyProc->procLatch;
		*stuck = kling_shared->delivering;
	}
	SpinLockRelease(&kling_shared->mutex);
	if (first)
		before_shmem_exit(kling_shmem_detach_deliverer, (Datum) 0);
	return first;
}

/* Withdraw the delivery process's latch at exit; "delivering" stays. */
static void
kling_shmem_detach_deliverer(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (kling_shared->delivery_latch == &MyProc->procLatch)
		kling_shared->delivery_latch = NULL;
	SpinLockRelease(&kling_shared->mutex);
}

/* Say which task's delivery runs now (0: none), in case the process dies. */
void
kling_shmem_set_delivering(int64 id)
{
	SpinLockAcquire(&kling_shared->mutex);
	kling_shared->delivering = id;
	SpinLockRelease(&kling_shared->mutex);
}

/* Whether a delivery process runs. */
bool
kling_shmem_deliverer_attached(void)
{
	bool		attached;

	SpinLockAcquire(&kling_shared->mutex);
	attached = (kling_shared->delivery_latch != NULL);
	SpinLockRelease(&kling_shared->mutex);
	return attached;
}

/* Wake the delivery process: there is work for it. */
void
kling_wake_deliverer(void)
{
	Latch	   *latch;

	SpinLockAcquire(&kling_shared->mutex);
	latch = kling_shared->delivery_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (latch != NULL)
		SetLatch(latch);
}

/* Whether a worker is running (it has published its latch). */
bool
kling_shmem_worker_attached(void)
{
	bool		attached;

	SpinLockAcquire(&kling_shared->mutex);
	attached = (kling_shared->worker_latch != NULL);
	SpinLockRelease(&kling_shared->mutex);
	return attached;
}

/* Withdraw the worker's latch at exit. */
static void
kling_shmem_detach_worker(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (kling_shared->worker_latch == &MyProc->procLatch)
	{
		kling_shared->worker_latch = NULL;
		kling_shared->database_id = InvalidOid;
		kling_shared->stats.pid = 0;
	}
	SpinLockRelease(&kling_shared->mutex);
}

/*
 * The worker takes the pending wake as it begins a round: a commit after
 * this sets its latch again.  The exchange is a full barrier, so the round's
 * snapshot, taken later, sees every commit whose wake was taken here.
 */
void
kling_take_wake(void)
{
	(void) pg_atomic_exchange_u32(&kling_shared->wake_pending, 0);
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

/*
 * Ask for the worker to be woken when the current transaction commits.
 */
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
 * Ask for the launcher and the worker to be woken when the current
 * transaction commits, because it creates the extension: the database may
 * be new to the launcher, and the worker may be waiting for the extension.
 */
void
kling_wake_launcher_at_commit(void)
{
	kling_watch_commit();
	launcher_wake_requested = true;
}

/* Publish the launcher's latch; withdrawn when it exits. */
void
kling_shmem_attach_launcher(void)
{
	SpinLockAcquire(&kling_shared->mutex);
	kling_shared->launcher_latch = &MyProc->procLatch;
	SpinLockRelease(&kling_shared->mutex);
	on_shmem_exit(kling_shmem_detach_launcher, (Datum) 0);
}

/* Withdraw the launcher's latch at exit. */
static void
kling_shmem_detach_launcher(int code, Datum arg)
{
	SpinLockAcquire(&kling_shared->mutex);
	if (kling_shared->launcher_latch == &MyProc->procLatch)
		kling_shared->launcher_latch = NULL;
	SpinLockRelease(&kling_shared->mutex);
}

/* Set the launcher's and the worker's latches, whatever the worker serves. */
static void
kling_wake_launcher(void)
{
	Latch	   *launcher;
	Latch	   *worker;

	SpinLockAcquire(&kling_shared->mutex);
	launcher = kling_shared->launcher_latch;
	worker = kling_shared->worker_latch;
	SpinLockRelease(&kling_shared->mutex);
	if (launcher != NULL)
		SetLatch(launcher);
	if (worker != NULL)
		SetLatch(worker);
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

/* Publish the worker's figures; it does so once a round. */
void
kling_stats_publish(const KlingWorkerStats *stats)
{
	SpinLockAcquire(&kling_shared->mutex);
	kling_shared->stats = *stats;
	SpinLockRelease(&kling_shared->mutex);
}

/*
 * Copy the worker's last published figures.  Returns false when no worker
 * runs.
 */
bool
kling_stats_read(KlingWorkerStats *stats)
{
	SpinLockAcquire(&kling_shared->mutex);
	*stats = kling_shared->stats;
	SpinLockRelease(&kling_shared->mutex);
	return stats->pid != 0;
}

/*
 * At commit, set the latch of the worker serving this database.  The
 * callback runs after the commit is visible to others, so the worker finds
 * the new rows when it looks.
 */
static void
kling_xact_callback(XactEvent event, void *arg)
{
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
		kling_wake_launcher();
	launcher_wake_requested = false;

	if (!wake_requested)
		return;
	wake_requested = false;

	/*
	 * A wake is already pending: the worker's next round sees this commit.
	 * The barrier orders the commit before the read, as kling_take_wake
	 * orders its exchange before the round's snapshot.
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&kling_shared->wake_pending) != 0)
		return;

	SpinLockAcquire(&kling_shared->mutex);
	if (kling_shared->database_id == MyDatabaseId)
		latch = kling_shared->worker_latch;
	SpinLockRelease(&kling_shared->mutex);

	/* No worker serves this database yet: it may be new to the launcher. */
	if (latch == NULL)
		kling_wake_launcher();
	else if (pg_atomic_exchange_u32(&kling_shared->wake_pending, 1) == 0)
		SetLatch(latch);
}
