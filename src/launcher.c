/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The kling launcher: waits for the served database to exist, then
 *		starts the worker in it, and starts it again if it stops.
 *
 * A background worker that connects to a database that does not exist
 * dies at once, and the postmaster would restart it every few seconds,
 * logging each time.  The launcher connects to no database, so it can
 * look the database up in the shared catalog and wait quietly until it
 * exists: before it is created, and after DROP DATABASE.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "settings.h"
#include "launcher.h"
#include "shmem.h"
#include "wait_events.h"
#include "worker.h"

/*
 * How often to look for a database that does not exist (yet); a CREATE
 * EXTENSION kling in it wakes the launcher at once anyway.
 */
#define KLING_DATABASE_RECHECK_MS 10000

/* Pause before starting a worker again after it stopped. */
#define KLING_WORKER_RESTART_MS 5000

/* Seconds before the postmaster restarts a launcher that died. */
#define KLING_LAUNCHER_RESTART_SECONDS 5

static void kling_describe_worker(BackgroundWorker *worker, const char *function,
								  const char *name);
static Oid	kling_lookup_database(void);
static void kling_run_worker(Oid database_id);
static void kling_launcher_sleep(long timeout_ms);

/*
 * What the launcher and the worker have in common: both connect, start
 * only after recovery (so a hot standby runs neither), live in this library.
 */
static void
kling_describe_worker(BackgroundWorker *worker, const char *function,
					  const char *name)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "kling");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", name);
}

/*
 * Register the launcher; called from _PG_init under
 * shared_preload_libraries.  It starts once recovery has finished, so a
 * hot standby runs none, and a promoted one starts it.
 */
void
kling_launcher_register(void)
{
	BackgroundWorker worker;

	kling_describe_worker(&worker, "kling_launcher_main", "kling launcher");
	worker.bgw_restart_time = KLING_LAUNCHER_RESTART_SECONDS;
	RegisterBackgroundWorker(&worker);
}

/*
 * The database's OID, or InvalidOid if there is no such database.  Without
 * a database of its own the launcher can only scan the shared catalog
 * directly, not through the caches.
 */
static Oid
kling_lookup_database(void)
{
	Oid			database_id = InvalidOid;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tuple);

		if (strcmp(NameStr(db->datname), kling_database_name) == 0)
		{
			database_id = db->oid;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return database_id;
}

/* Sleep on the latch, handling reloads; SIGTERM ends the process. */
static void
kling_launcher_sleep(long timeout_ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 timeout_ms, kling_wait_event(KLING_WAIT_LAUNCHER));
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * Start the worker in the database and wait until it stops.
 */
static void
kling_run_worker(Oid database_id)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	pid_t		pid;

	kling_describe_worker(&worker, "kling_worker_main", "kling worker");
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = ObjectIdGetDatum(database_id);
	worker.bgw_notify_pid = MyProcPid;

	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		ereport(WARNING,
				(errmsg("kling: could not start the worker: no background worker slot free"),
				 errhint("Raise max_worker_processes.")));
		return;
	}
	if (WaitForBackgroundWorkerStartup(handle, &pid) != BGWH_STARTED)
		return;

	pgstat_report_activity(STATE_RUNNING,
						   psprintf("kling: worker %d serves database \"%s\"",
									(int) pid, kling_database_name));
	(void) WaitForBackgroundWorkerShutdown(handle);
	pfree(handle);
}

/*
 * Start the delivery process in the worker's database, without waiting for
 * it; the worker (the caller) is signalled when it stops, so that it starts
 * it again.  Returns false if no background worker slot is free.
 */
bool
kling_start_deliverer(Oid database_id)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	kling_describe_worker(&worker, "kling_deliverer_main", "kling delivery");
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = ObjectIdGetDatum(database_id);
	worker.bgw_notify_pid = MyProcPid;
	return RegisterDynamicBackgroundWorker(&worker, &handle);
}

/*
 * The launcher's entry point.
 */
void
kling_launcher_main(Datum main_arg)
{
	bool		said_missing = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* No database: shared catalogs only. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	/* CREATE EXTENSION kling wakes it at its commit. */
	kling_shmem_attach_launcher();

	for (;;)
	{
		Oid			database_id = kling_lookup_database();

		if (!OidIsValid(database_id))
		{
			if (!said_missing)
				ereport(LOG,
						(errmsg("kling: database \"%s\" does not exist; the worker starts when it does",
								kling_database_name),
						 errhint("Create the database, or set kling.database_name and restart the server.")));
			said_missing = true;
			pgstat_report_activity(STATE_IDLE, NULL);
			kling_launcher_sleep(KLING_DATABASE_RECHECK_MS);
			continue;
		}

		said_missing = false;

		/* A worker started by a launcher that died still runs: wait for it. */
		if (kling_shmem_worker_attached())
		{
			kling_launcher_sleep(KLING_WORKER_RESTART_MS);
			continue;
		}
		kling_run_worker(database_id);
		/* Stopped: dropped database, crash or terminate. Pause, look again. */
		kling_launcher_sleep(KLING_WORKER_RESTART_MS);
	}
}
