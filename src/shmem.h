/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		State the kling worker shares with the backends that wake it.
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

extern void kling_shmem_register(void);
extern bool kling_shmem_attach_worker(void);
extern bool kling_shmem_worker_attached(void);
extern bool kling_shmem_attach_deliverer(int64 *stuck);
extern void kling_shmem_set_delivering(int64 id);
extern bool kling_shmem_deliverer_attached(void);
extern void kling_wake_deliverer(void);
extern void kling_take_wake(void);
extern void kling_wake_worker_at_commit(void);
extern void kling_note_cancel_at_commit(void);
extern uint32 kling_cancels_committed(void);
extern void kling_wake_launcher_at_commit(void);
extern void kling_shmem_attach_launcher(void);
extern void kling_announce_final_at_commit(void);
extern void kling_sleep_until_final(long timeout_ms);
extern void kling_stop_sleeping(void);
extern void kling_stats_publish(const KlingWorkerStats *stats);
extern bool kling_stats_read(KlingWorkerStats *stats);

#endif							/* KLING_SHMEM_H */
