/*-------------------------------------------------------------------------
 *
 * deliverer.h
 *		The kling delivery process, started by the worker.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_DELIVERER_H
#define KLING_DELIVERER_H

extern PGDLLEXPORT void kling_deliverer_main(Datum main_arg);

#endif							/* KLING_DELIVERER_H */
