/*-------------------------------------------------------------------------
 *
 * wait_events.h
 *		The wait events kling's processes report while they sleep: named
 *		ones on PostgreSQL 17 and later, "Extension" before.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_WAIT_EVENTS_H
#define KLING_WAIT_EVENTS_H

typedef enum KlingWaitEvent
{
	KLING_WAIT_LAUNCHER,
	KLING_WAIT_WORKER,
	KLING_WAIT_DELIVERER,
	KLING_WAIT_TASK_FINAL,
	KLING_WAIT_EVENTS
} KlingWaitEvent;

extern uint32 kling_wait_event(KlingWaitEvent which);

#endif							/* KLING_WAIT_EVENTS_H */
