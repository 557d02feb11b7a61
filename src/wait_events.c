/*-------------------------------------------------------------------------
 *
 * wait_events.c
 *		Names kling's wait events once per process.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/wait_event.h"

#include "compat.h"
#include "wait_events.h"

static const char *const kling_wait_event_names[KLING_WAIT_EVENTS] = {
	[KLING_WAIT_LAUNCHER] = "KlingLauncherMain",
	[KLING_WAIT_WORKER] = "KlingWorkerMain",
	[KLING_WAIT_DELIVERER] = "KlingDelivererMain",
	[KLING_WAIT_TASK_FINAL] = "KlingWaitTaskFinal",
};

/* The event to report; registering a name takes a lock, so it is kept. */
uint32
kling_wait_event(KlingWaitEvent which)
{
	static uint32 known[KLING_WAIT_EVENTS];

	if (known[which] == 0)
		known[which] = kling_new_wait_event(kling_wait_event_names[which]);
	return known[which];
}
