/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The kling background worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_WORKER_H
#define KLING_WORKER_H

extern void kling_worker_register(void);
extern PGDLLEXPORT void kling_worker_main(Datum main_arg);

#endif							/* KLING_WORKER_H */
