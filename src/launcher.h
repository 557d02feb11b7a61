/*-------------------------------------------------------------------------
 *
 * launcher.h
 *		The kling launcher, which starts the worker in its database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_LAUNCHER_H
#define KLING_LAUNCHER_H

extern void kling_launcher_register(void);
extern PGDLLEXPORT void kling_launcher_main(Datum main_arg);

#endif							/* KLING_LAUNCHER_H */
