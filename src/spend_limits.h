/*-------------------------------------------------------------------------
 *
 * spend_limits.h
 *		What one role may spend, checked as it enqueues.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SPEND_LIMITS_H
#define KLING_SPEND_LIMITS_H

extern void kling_check_limits(const char *role);
extern void kling_check_active_limit(const char *role);

#endif							/* KLING_SPEND_LIMITS_H */
