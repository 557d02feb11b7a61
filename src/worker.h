/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The kling background worker, started by the launcher.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_WORKER_H
#define KLING_WORKER_H

extern PGDLLEXPORT void kling_worker_main(Datum main_arg);

#endif							/* KLING_WORKER_H */
