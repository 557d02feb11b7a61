/*-------------------------------------------------------------------------
 *
 * launcher.h
 *		The kling launcher, which starts the worker in its database, and the
 *		start of the delivery process beside the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_LAUNCHER_H
#define KLING_LAUNCHER_H

extern void kling_launcher_register(void);
extern PGDLLEXPORT void kling_launcher_main(Datum main_arg);
extern bool kling_start_deliverer(Oid database_id);

#endif							/* KLING_LAUNCHER_H */
