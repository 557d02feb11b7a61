/*-------------------------------------------------------------------------
 *
 * store.h
 *		The task store: every read and write of kling_tasks, all through
 *		SPI with parameters and kept plans (plan_cache.c).  Its files, by
 *		what they hold: task_access.c (the SQL functions'), spend_limits.c,
 *		task_claims.c and task_results.c (the worker's), delivery_queue.c,
 *		task_history.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_STORE_H
#define KLING_STORE_H

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Ids of tasks: those a store call made final, to deliver and announce. */
typedef struct KlingIds
{
	int			n;
	int			cap;
	int64	   *ids;
} KlingIds;

/* Which state a result may still be written over. */
typedef enum KlingExpect
{
	KLING_EXPECT_SUBMITTING,	/* a create's result */
	KLING_EXPECT_AT_PROVIDER	/* a poll's result: queued or generating */
} KlingExpect;

/* What became of a result written by kling_store_apply_all. */
typedef enum KlingWritten
{
	KLING_NOT_WRITTEN,			/* the task left the expected state, or is gone */
	KLING_WRITTEN,
	KLING_HELD					/* a user's open transaction holds the task:
								 * write it in a later round */
} KlingWritten;

/* One change to a task, as the worker decided it from a response. */
typedef struct KlingTaskUpdate
{
	int64		id;
	KlingExpect expect;
	const char *status;			/* the new status; NULL: unchanged */
	const char *generation_id;	/* NULL: unchanged */
	const char *video_url;		/* NULL: unchanged */
	Jsonb	   *result;			/* NULL: unchanged */
	const char *error;			/* NULL clears it */
	int			attempts;
	int			next_attempt_ms;	/* from now */
	KlingWritten written;		/* set by kling_store_apply_all */
} KlingTaskUpdate;

/* A pending task the worker has claimed to send. */
typedef struct KlingClaim
{
	int64		id;
	char	   *prompt;
	Jsonb	   *opts;
	int			attempts;
	char	   *body;			/* the request body, built by the worker
								 * before the claim commits */
} KlingClaim;

/* A task at the provider, as the table has it, to poll. */
typedef struct KlingAtProvider
{
	int64		id;
	bool		generating;		/* else queued */
	char	   *generation_id;
	int			attempts;
	TimestampTz next_attempt_at;
	char	   *model;			/* from opts, or NULL */
	char	   *duration;
} KlingAtProvider;

typedef void (*KlingVisitTask) (const KlingAtProvider *task, void *arg);

/* Where a task made by the trigger writes its video URL back. */
typedef struct KlingTarget
{
	Oid			table;
	const char *id_column;
	const char *url_column;
	const char *video_column;	/* NULL: none */
} KlingTarget;

/* What the delivery process needs to deliver a final task to its owner. */
typedef struct KlingDelivery
{
	int64		id;
	char	   *owner;
	char	   *status;
	char	   *video_url;
	char	   *error;
	Oid			target_table;	/* InvalidOid: no write-back */
	char	   *target_id_column;
	char	   *target_url_column;
	char	   *callback;		/* signature of the callback, or NULL */
	Datum		row;			/* the task's row, for the callback */
	char	   *target_video_column;	/* set once the video is kept */
	char	   *video_key;		/* kept in a bucket: its object key */
	Oid			video_object;	/* kept in the database: its large object */
	Datum		video;			/* what the video column gets, or 0 */
	Oid			video_type;
} KlingDelivery;

/* A task a worker round made final, as the round announces it. */
typedef struct KlingFinal
{
	int64		id;
	char	   *status;
	bool		marked;			/* its delivery is left to the delivery process */
} KlingFinal;

/* How long tasks of one model and duration took at the provider lately. */
typedef struct KlingGenerationTime
{
	char	   *model;
	char	   *duration;
	int			samples;
	int			p1_ms;			/* 1st percentile, sending to completion */
} KlingGenerationTime;

/* Called by the SQL functions, in the caller's transaction. */
extern int64 kling_store_insert(text *prompt, Jsonb *opts, const KlingTarget *target);
extern Datum kling_store_fetch(int64 id, char **status);
extern bool kling_store_cancel(int64 id, char **status);
extern void kling_store_retry(int64 id);
extern bytea *kling_store_video(int64 id);

/* Called by the worker and the delivery process, one transaction a round. */
extern bool kling_store_begin_round(void);
extern void kling_store_end_round(void);
extern Oid	kling_store_extension(void);
extern void kling_ids_add(KlingIds *ids, int64 id);
extern Datum kling_store_id_array(const int64 *ids, int n);

/* task_claims.c */
extern List *kling_store_claim_creates(int limit);
extern bool kling_store_subscribed(void);
extern void kling_store_visit_at_provider(KlingVisitTask visit, void *arg);
extern int	kling_store_count_in_flight(void);
extern bool kling_store_next_send(TimestampTz *due);

/* task_results.c: each adds the tasks it made final to *made_final. */
extern void kling_store_apply_all(KlingTaskUpdate *updates, int n, KlingIds *made_final);
extern int	kling_store_recover(Datum only, Datum *held, KlingIds *made_final);
extern void kling_store_expire(int task_timeout_ms, KlingIds *made_final);

/* delivery_queue.c */
extern List *kling_store_mark_deliveries(const KlingIds *final);
extern List *kling_store_claim_deliveries(int limit);
extern void kling_store_finish_delivery(int64 id, const char *error);

/* task_history.c */
extern int	kling_store_delete_expired(int retention_s, int limit, List **keys);
extern List *kling_store_generation_times(MemoryContext context);

#endif							/* KLING_STORE_H */
