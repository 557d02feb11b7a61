/*-------------------------------------------------------------------------
 *
 * deliverer.c
 *		The kling delivery process: runs the write-backs and callbacks of
 *		final tasks, apart from the worker.
 *
 * User code runs here and nowhere else, so that no user can hold up the
 * worker's sends and polls: the worker only marks tasks whose delivery is
 * pending and wakes this process, which delivers them a batch per
 * transaction (a delivery's effects and the end of its pending mark commit
 * together, so none runs twice).  Each delivery is sandboxed (sandbox.c);
 * one that will not stop even when cancelled again and again ends this
 * process, and its successor abandons that delivery, recording why, and
 * goes on with the others.  The worker starts this process, and starts it
 * again if it stops.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "deliverer.h"
#include "delivery.h"
#include "sandbox.h"
#include "settings.h"
#include "shmem.h"
#include "store.h"
#include "wait_events.h"

/* Deliveries per transaction. */
#define KLING_DELIVERY_BATCH 100

/* A look for pending deliveries at least this often, in case a wake-up was lost. */
#define KLING_DELIVERY_RECHECK_MS 10000

static MemoryContext kling_batch_context = NULL;

static bool kling_deliver_batch(void);
static void kling_abandon_delivery(int64 id);

/*
 * The delivery process's entry point.
 */
void
kling_deliverer_main(Datum main_arg)
{
	int64		stuck = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(main_arg), InvalidOid, 0);
	pgstat_report_appname("kling delivery");
	kling_pin_worker_settings();
	if (!kling_shmem_attach_deliverer(&stuck))
		proc_exit(0);

	kling_batch_context = AllocSetContextCreate(TopMemoryContext,
												"kling delivery batch",
												ALLOCSET_DEFAULT_SIZES);
	if (stuck != 0)
		kling_abandon_delivery(stuck);

	for (;;)
	{
		/* A full batch means more may wait. */
		while (kling_deliver_batch())
			CHECK_FOR_INTERRUPTS();

		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 KLING_DELIVERY_RECHECK_MS, kling_wait_event(KLING_WAIT_DELIVERER));
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/*
 * Deliver one batch of pending deliveries in one transaction.  Returns
 * whether the batch was full.  An error outside the sandboxed user code
 * (none is expected) rolls the batch back; it is tried again at the next
 * wake-up or look.
 */
static bool
kling_deliver_batch(void)
{
	volatile int n = 0;
	MemoryContext old;

	MemoryContextReset(kling_batch_context);
	old = MemoryContextSwitchTo(kling_batch_context);
	PG_TRY();
	{
		ListCell   *lc;
		List	   *deliveries = NIL;

		pgstat_report_activity(STATE_RUNNING, "kling: delivering final tasks");
		if (kling_store_begin_round())
			deliveries = kling_store_claim_deliveries(KLING_DELIVERY_BATCH);
		foreach(lc, deliveries)
		{
			KlingDelivery *d = lfirst(lc);

			kling_shmem_set_delivering(d->id);
			kling_deliver(d);
			kling_shmem_set_delivering(0);
		}
		if (deliveries != NIL && kling_fault("delivery_end"))
			ereport(ERROR,
					(errmsg("kling: injected fault at delivery_end (kling.fault_injection)")));
		kling_store_end_round();
		n = list_length(deliveries);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(kling_batch_context);
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
		kling_shmem_set_delivering(0);
		n = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	pgstat_report_stat(false);
	return n == KLING_DELIVERY_BATCH;
}

/*
 * The previous delivery process died while delivering this task (its user
 * code would not stop): record that on the task, and do not try again.
 */
static void
kling_abandon_delivery(int64 id)
{
	ereport(LOG,
			(errmsg("kling: the delivery of task %lld did not stop when cancelled; it is abandoned",
					(long long) id)));
	if (kling_store_begin_round())
		kling_store_finish_delivery(id, psprintf("abandoned: it did not stop within kling.delivery_timeout, even when cancelled again and again, so its process was ended"));
	kling_store_end_round();
	kling_shmem_set_delivering(0);
}
