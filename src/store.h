/*-------------------------------------------------------------------------
 *
 * store.h
 *		The task store: every read and write of kling_tasks, all through
 *		SPI with parameters and kept plans.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_STORE_H
#define KLING_STORE_H

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Which state a result may still be written over. */
typedef enum KlingExpect
{
	KLING_EXPECT_SUBMITTING,	/* a create's result */
	KLING_EXPECT_AT_PROVIDER	/* a poll's result: queued or generating */
} KlingExpect;

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
	bool		held;			/* set by apply: a user's transaction holds
								 * the task; write it in a later round */
} KlingTaskUpdate;

/* A task the worker has claimed to send or poll. */
typedef struct KlingClaim
{
	int64		id;
	char	   *prompt;			/* creates only */
	Jsonb	   *opts;
	char	   *generation_id;	/* polls only */
	int			attempts;
	char	   *body;			/* creates: the request body, built by the
								 * worker before the claim commits */
} KlingClaim;

/* Where a task made by the trigger writes its video URL back. */
typedef struct KlingTarget
{
	Oid			table;
	const char *id_column;
	const char *url_column;
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

/* Called by the worker, in one transaction per round. */
extern bool kling_store_begin_round(void);
extern void kling_store_end_round(void);
extern int	kling_store_recover(Datum only, Datum *held);
extern int	kling_store_expire(int task_timeout_ms);
extern void kling_store_apply_all(KlingTaskUpdate *updates, int n);
extern int	kling_store_count_in_flight(void);
extern List *kling_store_claim_creates(int limit);
extern List *kling_store_claim_polls(int limit, Datum polling);
extern bool kling_store_next_due(bool include_pending, Datum polling, TimestampTz *due);
extern bool kling_store_pending_exists(void);
extern Datum kling_store_id_array(const int64 *ids, int n);
extern List *kling_store_finalized(void);
extern List *kling_store_mark_deliveries(List *ids);

/* Called by the delivery process, in one transaction per batch. */
extern List *kling_store_claim_deliveries(int limit);
extern void kling_store_finish_delivery(int64 id, const char *error);
extern int	kling_store_delete_expired(int retention_s, int limit);
extern List *kling_store_generation_times(MemoryContext context);
extern char *kling_store_config_error(MemoryContext context);

#endif							/* KLING_STORE_H */
