/*-------------------------------------------------------------------------
 *
 * schedule.h
 *		The worker's poll schedule: the tasks at the provider and when each
 *		is polled next, in memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SCHEDULE_H
#define KLING_SCHEDULE_H

#include "datatype/timestamp.h"
#include "lib/pairingheap.h"

typedef struct KlingPollEntry
{
	int64		id;				/* the task; the hash key */
	TimestampTz due;
	char	   *generation_id;
	int			route;			/* the route pair its create went to */
	int			attempts;		/* as the table has them */
	bool		generating;		/* as the table has it; else queued */
	bool		learned;		/* the history knows how long it takes */
	bool		under_way;		/* its poll is sent; not in the heap */
	bool		seen;			/* found by the current resync */
	pairingheap_node node;
} KlingPollEntry;

extern void kling_schedule_clear(void);
extern KlingPollEntry *kling_schedule_put(int64 id, const char *generation_id,
										  int route, bool generating, int attempts,
										  bool learned, TimestampTz due);
extern KlingPollEntry *kling_schedule_find(int64 id);
extern void kling_schedule_set_due(KlingPollEntry *entry, TimestampTz due);
extern void kling_schedule_remove(int64 id);
extern KlingPollEntry *kling_schedule_take_due(TimestampTz now);
extern TimestampTz kling_schedule_next_due(void);
extern long kling_schedule_size(void);
extern void kling_schedule_mark_unseen(void);
extern int	kling_schedule_drop_unseen(void);

#endif							/* KLING_SCHEDULE_H */
