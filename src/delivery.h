/*-------------------------------------------------------------------------
 *
 * delivery.h
 *		Delivering final tasks: write-back, callbacks, notifications.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_DELIVERY_H
#define KLING_DELIVERY_H

#include "store.h"

extern int	kling_announce_finalized(const KlingIds *final);
extern void kling_deliver(KlingDelivery *d);
extern void kling_notify_final(int64 id, const char *status);

#endif							/* KLING_DELIVERY_H */
