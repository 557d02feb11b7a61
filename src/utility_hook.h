/*-------------------------------------------------------------------------
 *
 * utility_hook.h
 *		Noticing CREATE EXTENSION kling as it commits.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_UTILITY_HOOK_H
#define KLING_UTILITY_HOOK_H

extern void kling_utility_hook_install(void);

#endif							/* KLING_UTILITY_HOOK_H */
