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

#endif							/* KLING_SHMEM_H */
