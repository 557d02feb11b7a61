/*-------------------------------------------------------------------------
 *
 * shmem_internal.h
 *		The layout of kling's shared memory, for the files that keep it
 *		(shmem.c: processes and wake-ups; account.c: the account's budget).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SHMEM_INTERNAL_H
#define KLING_SHMEM_INTERNAL_H

#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/latch.h"
#include "storage/spin.h"

#include "shmem.h"

#define KLING_PROBE_QUEUE 16

/* One served database: its worker, its delivery process, its share. */
typedef struct KlingDatabaseSlot
{
	Oid			database_id;	/* InvalidOid: the slot is free */
	Latch	   *worker_latch;	/* NULL while no worker runs */
	pid_t		worker_pid;
	pg_atomic_uint32 wake_pending;	/* a commit set the latch since the
									 * worker's last round began */
	KlingWorkerStats stats;
	Latch	   *delivery_latch; /* NULL while no delivery process runs */
	pid_t		delivery_pid;
	int64		delivering;		/* the task whose delivery runs now, or 0;
								 * left set by a process that died in it */
	KlingRest	rest;			/* why its worker stopped for good, if so */
	uint32		extension_generation;	/* bumped by CREATE EXTENSION kling */
	TimestampTz paused_until;	/* a statement needs the database alone */
	int			in_flight;		/* its tasks counting against the budget */
	bool		wants_more;		/* pending tasks wait for budget */
} KlingDatabaseSlot;

typedef struct KlingSharedState
{
	slock_t		mutex;			/* everything below but the atomics */
	Latch	   *launcher_latch; /* NULL while no launcher runs */
	ConditionVariable task_final;	/* broadcast when tasks become final */
	pg_atomic_uint32 cancels;	/* bumped at each commit that cancels */
	/* Databases where CREATE EXTENSION kling committed, for the launcher. */
	Oid			probe[KLING_PROBE_QUEUE];
	int			nprobe;
	bool		probe_overflow; /* more than fit: look at every database */
	TimestampTz hold_until;		/* the provider refused the account */
	char		hold_reason[64];
	int			nslots;
	KlingDatabaseSlot slots[FLEXIBLE_ARRAY_MEMBER];
} KlingSharedState;

extern KlingSharedState *kling_shared;

extern KlingDatabaseSlot *kling_slot_of(Oid database_id);
extern KlingDatabaseSlot *kling_own_slot(void);

#endif							/* KLING_SHMEM_INTERNAL_H */
