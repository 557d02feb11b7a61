/*-------------------------------------------------------------------------
 *
 * account.h
 *		The provider account's limits, shared by the workers of every
 *		database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_ACCOUNT_H
#define KLING_ACCOUNT_H

#include "datatype/timestamp.h"

extern int	kling_budget_take(int in_flight, int want, int limit);
extern void kling_budget_publish(int in_flight, bool wants_more);
extern void kling_account_hold(TimestampTz until, const char *reason);
extern TimestampTz kling_account_held_until(char *reason, Size reason_size);
extern void kling_account_release(void);

#endif							/* KLING_ACCOUNT_H */
