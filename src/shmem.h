/*-------------------------------------------------------------------------
 *
 * shmem.h
 *		State the kling worker shares with the backends that wake it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SHMEM_H
#define KLING_SHMEM_H

extern void kling_shmem_register(void);
extern void kling_shmem_attach_worker(void);
extern void kling_wake_worker_at_commit(void);
extern void kling_announce_final_at_commit(void);
extern bool kling_sleep_until_final(long timeout_ms);
extern void kling_stop_sleeping(void);

#endif							/* KLING_SHMEM_H */
