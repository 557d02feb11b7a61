/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The kling launcher: serves every database where the extension is
 *		created, a worker in each, started when it is found and again if
 *		it stops.
 *
 * The launcher connects to no database: it reads the list of databases
 * from the shared catalog and starts a worker in each one it may serve
 * (kling.databases).  A worker that finds no extension in its database
 * says so and exits; the launcher leaves that database alone until a
 * CREATE EXTENSION kling there commits, which wakes it.  A CREATE DATABASE
 * wakes it too, and it looks anyway every few seconds, so a database made
 * from a template that has the extension is found as well.  Each database
 * takes one of kling.max_databases slots and a background worker process;
 * when either runs out, the log says so once per database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
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
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "launcher.h"
#include "settings.h"
#include "shmem.h"
#include "wait_events.h"

/*
 * How often to look for new databases; a CREATE DATABASE or a CREATE
 * EXTENSION kling wakes the launcher at once anyway.
 */
#define KLING_DATABASE_RECHECK_MS 5000

/* Pause before starting a worker again after it stopped. */
#define KLING_WORKER_RESTART_MS 5000

/* Seconds before the postmaster restarts a launcher that died. */
#define KLING_LAUNCHER_RESTART_SECONDS 5

/* A database the launcher may serve, as it knows it between looks. */
typedef struct KlingServed
{
	Oid			database_id;
	char		name[NAMEDATALEN];
	BackgroundWorkerHandle *handle; /* its worker, if this launcher started it */
	TimestampTz stopped_at;		/* when its worker last stopped, or 0 */
	TimestampTz refused_since;	/* no slot for it since then, or 0 */
	bool		resting;		/* its worker found nothing to serve */
	bool		said_unserved;	/* the log said why it is not served */
	bool		seen;			/* in the catalog at the last look */
} KlingServed;

static List *kling_served = NIL;

static void kling_describe_worker(BackgroundWorker *worker, const char *function,
								  const char *name);
static void kling_read_databases(void);
static KlingServed *kling_served_entry(Oid database_id);
static void kling_take_probes(void);
static void kling_check_slots(void);
static TimestampTz kling_serve(KlingServed *db, TimestampTz now);
static bool kling_start_worker(KlingServed *db);
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

static KlingServed *
kling_served_entry(Oid database_id)
{
	ListCell   *lc;

	foreach(lc, kling_served)
	{
		KlingServed *db = lfirst(lc);

		if (db->database_id == database_id)
			return db;
	}
	return NULL;
}

/*
 * Read the databases the launcher may serve: those that take connections,
 * are no template (a connection to one would make CREATE DATABASE fail)
 * and kling.databases allows.  Without a database of its own the launcher
 * can only scan the shared catalog directly, not through the caches.
 * Entries of databases gone are dropped.
 */
static void
kling_read_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	ListCell   *lc;
	MemoryContext old;

	foreach(lc, kling_served)
		((KlingServed *) lfirst(lc))->seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);
		KlingServed *db;

		if (!form->datallowconn || form->datistemplate ||
			form->datconnlimit == DATCONNLIMIT_INVALID_DB ||
			!kling_database_allowed(NameStr(form->datname)))
			continue;
		db = kling_served_entry(form->oid);
		if (db == NULL)
		{
			old = MemoryContextSwitchTo(TopMemoryContext);
			db = palloc0(sizeof(KlingServed));
			db->database_id = form->oid;
			kling_served = lappend(kling_served, db);
			MemoryContextSwitchTo(old);
		}
		strlcpy(db->name, NameStr(form->datname), NAMEDATALEN);
		db->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	foreach(lc, kling_served)
	{
		KlingServed *db = lfirst(lc);

		if (db->seen)
			continue;
		/* Dropped, or no longer allowed: its worker stops, its slot goes. */
		kling_stop_database(db->database_id);
		kling_slot_free(db->database_id);
		if (db->handle == NULL)
		{
			kling_served = foreach_delete_current(kling_served, lc);
			pfree(db);
		}
	}
}

/* Databases where CREATE EXTENSION kling committed are looked at again. */
static void
kling_take_probes(void)
{
	Oid			probes[64];
	bool		all;
	int			n = kling_probe_requests(probes, lengthof(probes), &all);
	ListCell   *lc;

	foreach(lc, kling_served)
	{
		KlingServed *db = lfirst(lc);

		bool		probe = all;

		for (int i = 0; i < n && !probe; i++)
			probe = (probes[i] == db->database_id);
		/* At once: the worker it had stopped for want of the extension. */
		if (probe)
		{
			kling_slot_unrest(db->database_id);
			db->resting = false;
			db->stopped_at = 0;
		}
	}
}

/*
 * Databases whose worker stopped for good rest; their slots are freed.
 * Slots of databases the launcher does not know (dropped while it was
 * down) are freed as well.
 */
static void
kling_check_slots(void)
{
	KlingSlotView *views = palloc(kling_max_databases * sizeof(KlingSlotView));
	int			n = kling_slots_read(views, kling_max_databases);

	for (int i = 0; i < n; i++)
	{
		KlingServed *db = kling_served_entry(views[i].database_id);

		if (views[i].attached)
			continue;
		if (db != NULL && views[i].rest != KLING_SERVING)
			db->resting = true;
		if (db == NULL || db->resting)
			kling_slot_free(views[i].database_id);
	}
	pfree(views);
}

/*
 * Make sure a worker serves the database, unless it rests, is paused or
 * stopped too recently; returns when to look again (0: no need).
 */
static TimestampTz
kling_serve(KlingServed *db, TimestampTz now)
{
	TimestampTz restart_at;
	KlingSlotView slot;

	if (db->handle != NULL)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(db->handle, &pid) != BGWH_STOPPED)
			return 0;
		pfree(db->handle);
		db->handle = NULL;
		db->stopped_at = now;
	}
	if (db->resting || !db->seen)
		return 0;

	restart_at = TimestampTzPlusMilliseconds(db->stopped_at, KLING_WORKER_RESTART_MS);
	if (db->stopped_at != 0 && now < restart_at)
		return restart_at;

	if (!kling_slot_assign(db->database_id))
	{
		/* A worker that finds no extension frees its slot in a moment. */
		if (db->refused_since == 0)
			db->refused_since = now;
		restart_at = TimestampTzPlusMilliseconds(db->refused_since, KLING_WORKER_RESTART_MS);
		if (now < restart_at)
			return restart_at;
		if (!db->said_unserved)
			ereport(LOG,
					(errmsg("kling: database \"%s\" is not served: all %d of kling.max_databases are taken",
							db->name, kling_max_databases),
					 errhint("Raise kling.max_databases (takes a restart), or list the databases to serve in kling.databases.")));
		db->said_unserved = true;
		return 0;
	}
	db->refused_since = 0;
	if (!kling_slot_read(db->database_id, &slot) || slot.worker_runs)
		return 0;				/* a worker a launcher before this one started */
	if (slot.paused_until > now)
		return slot.paused_until;

	if (!kling_start_worker(db))
	{
		if (!db->said_unserved)
			ereport(LOG,
					(errmsg("kling: database \"%s\" is not served: no background worker slot is free",
							db->name),
					 errhint("Raise max_worker_processes (takes a restart).")));
		db->said_unserved = true;
		db->stopped_at = now;
		return restart_at;
	}
	db->said_unserved = false;
	return 0;
}

/* Start a worker in the database, telling the launcher when it stops. */
static bool
kling_start_worker(KlingServed *db)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext old;
	bool		started;

	kling_describe_worker(&worker, "kling_worker_main", "kling worker");
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	worker.bgw_main_arg = ObjectIdGetDatum(db->database_id);
	worker.bgw_notify_pid = MyProcPid;

	old = MemoryContextSwitchTo(TopMemoryContext);
	started = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(old);
	if (started)
		db->handle = handle;
	return started;
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
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* No database: shared catalogs only. */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	/* CREATE DATABASE and CREATE EXTENSION kling wake it. */
	kling_shmem_attach_launcher();
	pgstat_report_activity(STATE_IDLE, NULL);

	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		TimestampTz next = TimestampTzPlusMilliseconds(now, KLING_DATABASE_RECHECK_MS);
		ListCell   *lc;
		long		secs;
		int			usecs;

		kling_read_databases();
		kling_check_slots();
		kling_take_probes();
		foreach(lc, kling_served)
		{
			TimestampTz again = kling_serve(lfirst(lc), now);

			if (again != 0 && again < next)
				next = again;
		}
		TimestampDifference(now, next, &secs, &usecs);
		kling_launcher_sleep(secs * 1000 + usecs / 1000 + 1);
	}
}
