/*-------------------------------------------------------------------------
 *
 * sql_api.h
 *		What the SQL-callable functions share with the trigger.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SQL_API_H
#define KLING_SQL_API_H

#include "utils/jsonb.h"

#include "store.h"

extern int64 kling_enqueue(text *prompt, Jsonb *opts, const KlingTarget *target);
extern void kling_warn_if_not_served(void);

#endif							/* KLING_SQL_API_H */
