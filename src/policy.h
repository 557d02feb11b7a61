/*-------------------------------------------------------------------------
 *
 * policy.h
 *		The worker's policy as pure code: what a response means for its
 *		task (the row update, and the effects on the worker), retry backoff,
 *		holds, and when to poll first.  No SPI, no curl, no globals.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_POLICY_H
#define KLING_POLICY_H

#include "nodes/pg_list.h"

#include "protocol.h"
#include "store.h"

/* What the worker knew of a task when it sent a request for it. */
typedef struct KlingSent
{
	int64		task_id;
	KlingRequestKind kind;
	int			route;			/* the route pair it went to */
	int			attempts;		/* transient failures so far */
	bool		generating;		/* polls: the task's status (else queued) */
	bool		learned;		/* the history knows how long such tasks take */
	int			first_poll_ms;	/* creates: when to poll first, once accepted */
} KlingSent;

/* The settings and state a decision depends on. */
typedef struct KlingPolicyParams
{
	int			poll_interval_ms;
	int			max_attempts;
	int			hold_ms;		/* how long a hold started now lasts */
	double		jitter;			/* in [0, 1): spreads retries */
} KlingPolicyParams;

/*
 * What a decision asks of the worker besides the row: applied once, after
 * the round's transaction, however often the round's writes are tried.
 */
typedef struct KlingEffects
{
	bool		request_failed; /* no complete 2xx answer */
	bool		rate_limited;	/* HTTP 429 */
	bool		retried;		/* the request is sent again later */
	bool		account_works;	/* the next hold starts short again */
	const char *error;			/* the worker's latest error, or NULL */
	const char *hold;			/* hold all sending, for this reason */
} KlingEffects;

typedef struct KlingDecision
{
	KlingTaskUpdate update;
	bool		write;			/* false: the task is as the table has it */
	KlingEffects effects;
} KlingDecision;

extern void kling_decide(const KlingSent *sent, long http_status,
						 const KlingResponse *r, const KlingPolicyParams *p,
						 KlingDecision *out);
extern int	kling_backoff_ms(int attempts, int poll_interval_ms, double jitter);
extern int	kling_next_hold_ms(int hold_ms, int poll_interval_ms);
extern bool kling_learned_first_poll(List *generation_times, const char *model,
									 const char *duration, int poll_interval_ms,
									 int *first_poll_ms);
extern bool kling_update_is_final(const KlingTaskUpdate *u);

#endif							/* KLING_POLICY_H */
