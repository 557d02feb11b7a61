/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		State the kling processes share: one slot per served database (its
 *		worker, its delivery process, the backends that wake them), the
 *		launcher, and the account's budget (account.h).
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SHMEM_H
#define KLING_SHMEM_H

#include "datatype/timestamp.h"

/* What the worker tells about itself, for the kling_worker view. */
typedef struct KlingWorkerStats
{
	int			pid;			/* 0 while no worker runs */
	Oid			database_id;
	char		state[64];
	TimestampTz started_at;
	TimestampTz last_round_at;
	int			requests_in_flight;
	int64		requests_sent;
	int64		requests_failed;
	int64		requests_retried;
	int64		rate_limited;
	char		last_error[256];
	TimestampTz last_error_at;
} KlingWorkerStats;

/* Why a database's worker stopped and is not started again by itself. */
typedef enum KlingRest
{
	KLING_SERVING = 0,
	KLING_REST_NO_EXTENSION,	/* until CREATE EXTENSION kling there */
	KLING_REST_SUBSCRIBED		/* kling_tasks is a subscriber's copy */
} KlingRest;

/* What the launcher sees of a slot. */
typedef struct KlingSlotView
{
	Oid			database_id;
	bool		attached;		/* a worker or delivery process runs in it */
	bool		worker_runs;	/* a worker does */
	KlingRest	rest;
	TimestampTz paused_until;
} KlingSlotView;

extern void kling_shmem_register(void);

/* The launcher. */
extern void kling_shmem_attach_launcher(void);
extern int	kling_slots_read(KlingSlotView *views, int max);
extern bool kling_slot_read(Oid database_id, KlingSlotView *view);
extern bool kling_slot_assign(Oid database_id);
extern void kling_slot_free(Oid database_id);
extern void kling_slot_unrest(Oid database_id);
extern int	kling_probe_requests(Oid *databases, int max, bool *all);
extern void kling_stop_database(Oid database_id);

/* A worker and a delivery process, in their database. */
extern bool kling_shmem_attach_worker(void);
extern uint32 kling_shmem_extension_generation(void);
extern bool kling_shmem_rest(KlingRest rest, uint32 generation);
extern void kling_stop_deliverer(void);
extern bool kling_shmem_attach_deliverer(int64 *stuck);
extern void kling_shmem_set_delivering(int64 id);
extern bool kling_shmem_deliverer_attached(void);
extern void kling_wake_deliverer(void);
extern void kling_take_wake(void);
extern void kling_stats_publish(const KlingWorkerStats *stats);

/* Backends. */
extern void kling_wake_worker_at_commit(void);
extern void kling_note_cancel_at_commit(void);
extern uint32 kling_cancels_committed(void);
extern void kling_wake_launcher_at_commit(void);
extern void kling_wake_launcher(void);
extern void kling_wake_after_commit_prepared(void);
extern void kling_announce_final_at_commit(void);
extern void kling_sleep_until_final(long timeout_ms);
extern void kling_stop_sleeping(void);
extern bool kling_stats_read(KlingWorkerStats *stats);
extern bool kling_pause_database(Oid database_id, int timeout_ms);
extern void kling_resume_database(Oid database_id);

#endif							/* KLING_SHMEM_H */
