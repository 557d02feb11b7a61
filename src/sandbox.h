/*-------------------------------------------------------------------------
 *
 * sandbox.h
 *		Running code with rights its caller lacks, and running a user's
 *		code on the user's behalf, without either one reaching the other.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SANDBOX_H
#define KLING_SANDBOX_H

#include "subxact.h"

/* The search_path of every query the extension runs with others' rights. */
#define KLING_SAFE_SEARCH_PATH "pg_catalog, pg_temp"

extern int	kling_pin_search_path(void);
extern void kling_unpin_settings(int nestlevel);
extern void kling_pin_worker_settings(void);
extern char *kling_run_as_user(Oid role, KlingStep step, void *arg);

#endif							/* KLING_SANDBOX_H */
