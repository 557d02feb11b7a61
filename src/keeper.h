/*-------------------------------------------------------------------------
 *
 * keeper.h
 *		Keeping completed videos: which to fetch, and storing what was
 *		fetched.  Driven by the worker's rounds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_KEEPER_H
#define KLING_KEEPER_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"

#include "http.h"

/* Videos fetched at once by one worker. */
#define KLING_MAX_DOWNLOADS 32

extern bool kling_keeper_take(KlingHttpRequest *req);
extern void kling_keeper_forget_objects(List *keys);
extern TimestampTz kling_keeper_round(void);
extern bool kling_keeper_committed(void);
extern void kling_keeper_aborted(void);
extern void kling_keeper_stop(void);
extern void kling_keeper_at_exit(int code, Datum arg);

#endif							/* KLING_KEEPER_H */
