/*-------------------------------------------------------------------------
 *
 * schedule.c
 *		The worker's poll schedule, in memory.
 *
 * A poll that finds a task still queued or generating changes nothing
 * durable, so it writes nothing: when to poll each task next lives here, a
 * hash table of the tasks at the provider with a heap ordered by due time.
 * The worker builds it from kling_tasks when it starts (a crash costs each
 * task one early poll, nothing more) and checks it against the table now
 * and then, to drop tasks cancelled or deleted meanwhile.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/hsearch.h"
#include "utils/memutils.h"

#include "schedule.h"

static HTAB *kling_entries = NULL;
static pairingheap *kling_due_heap = NULL;
static MemoryContext kling_schedule_context = NULL;

static int	kling_due_compare(const pairingheap_node *a, const pairingheap_node *b, void *arg);

/* The heap's order: earliest due first (pairingheap keeps the largest on top). */
static int
kling_due_compare(const pairingheap_node *a, const pairingheap_node *b, void *arg)
{
	const KlingPollEntry *ea = pairingheap_const_container(KlingPollEntry, node, a);
	const KlingPollEntry *eb = pairingheap_const_container(KlingPollEntry, node, b);

	if (ea->due < eb->due)
		return 1;
	if (ea->due > eb->due)
		return -1;
	return 0;
}

/* Empty the schedule (and make it, the first time). */
void
kling_schedule_clear(void)
{
	HASHCTL		ctl;
	MemoryContext old;

	if (kling_schedule_context == NULL)
		kling_schedule_context = AllocSetContextCreate(TopMemoryContext,
													   "kling poll schedule",
													   ALLOCSET_DEFAULT_SIZES);
	MemoryContextReset(kling_schedule_context);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(KlingPollEntry);
	ctl.hcxt = kling_schedule_context;
	kling_entries = hash_create("kling poll schedule", 1024, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	old = MemoryContextSwitchTo(kling_schedule_context);
	kling_due_heap = pairingheap_allocate(kling_due_compare, NULL);
	MemoryContextSwitchTo(old);
}

/*
 * Add a task, due at due, or update what is known of one already there
 * (which keeps its due time); either way it counts as seen.
 */
KlingPollEntry *
kling_schedule_put(int64 id, const char *generation_id, int route,
				   bool generating, int attempts, bool learned, TimestampTz due)
{
	bool		found;
	KlingPollEntry *e = hash_search(kling_entries, &id, HASH_ENTER, &found);

	if (!found || strcmp(e->generation_id, generation_id) != 0)
	{
		if (found)
			pfree(e->generation_id);
		e->generation_id = MemoryContextStrdup(kling_schedule_context, generation_id);
	}
	e->route = route;
	e->generating = generating;
	e->attempts = attempts;
	e->learned = learned;
	e->seen = true;
	if (!found)
	{
		e->under_way = true;	/* not in the heap yet */
		kling_schedule_set_due(e, due);
	}
	return e;
}

/* The task's entry, or NULL. */
KlingPollEntry *
kling_schedule_find(int64 id)
{
	return hash_search(kling_entries, &id, HASH_FIND, NULL);
}

/* Due again at due: a poll under way has come back, or the time moved. */
void
kling_schedule_set_due(KlingPollEntry *entry, TimestampTz due)
{
	if (!entry->under_way)
		pairingheap_remove(kling_due_heap, &entry->node);
	entry->under_way = false;
	entry->due = due;
	pairingheap_add(kling_due_heap, &entry->node);
}

/* Forget a task: it is final, cancelled or gone. */
void
kling_schedule_remove(int64 id)
{
	KlingPollEntry *e = kling_schedule_find(id);

	if (e == NULL)
		return;
	if (!e->under_way)
		pairingheap_remove(kling_due_heap, &e->node);
	pfree(e->generation_id);
	hash_search(kling_entries, &id, HASH_REMOVE, NULL);
}

/*
 * The task due first, if it is due by now: it leaves the heap, its poll
 * under way until kling_schedule_set_due() or kling_schedule_remove().
 */
KlingPollEntry *
kling_schedule_take_due(TimestampTz now)
{
	KlingPollEntry *e;

	if (pairingheap_is_empty(kling_due_heap))
		return NULL;
	e = pairingheap_container(KlingPollEntry, node, pairingheap_first(kling_due_heap));
	if (e->due > now)
		return NULL;
	pairingheap_remove_first(kling_due_heap);
	e->under_way = true;
	return e;
}

/* When the next poll is due, not counting those under way; 0 if none. */
TimestampTz
kling_schedule_next_due(void)
{
	if (pairingheap_is_empty(kling_due_heap))
		return 0;
	return pairingheap_container(KlingPollEntry, node,
								 pairingheap_first(kling_due_heap))->due;
}

/* How many tasks the schedule holds. */
long
kling_schedule_size(void)
{
	return hash_get_num_entries(kling_entries);
}

/* Start a check against the table: every entry unseen until put again. */
void
kling_schedule_mark_unseen(void)
{
	HASH_SEQ_STATUS status;
	KlingPollEntry *e;

	hash_seq_init(&status, kling_entries);
	while ((e = hash_seq_search(&status)) != NULL)
		e->seen = false;
}

/*
 * End a check: drop the tasks the table no longer has at the provider.
 * A poll under way for one is answered, and the answer not written.
 */
int
kling_schedule_drop_unseen(void)
{
	HASH_SEQ_STATUS status;
	KlingPollEntry *e;
	int			dropped = 0;

	hash_seq_init(&status, kling_entries);
	while ((e = hash_seq_search(&status)) != NULL)
	{
		if (e->seen)
			continue;
		if (!e->under_way)
			pairingheap_remove(kling_due_heap, &e->node);
		pfree(e->generation_id);
		/* Removing the entry just returned is allowed during a scan. */
		hash_search(kling_entries, &e->id, HASH_REMOVE, NULL);
		dropped++;
	}
	return dropped;
}
