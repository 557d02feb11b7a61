/*-------------------------------------------------------------------------
 *
 * subxact.h
 *		Running a step in a subtransaction that catches its error.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SUBXACT_H
#define KLING_SUBXACT_H

typedef void (*KlingStep) (void *arg);

extern char *kling_try_in_subtransaction(KlingStep step, void *arg);

#endif							/* KLING_SUBXACT_H */
