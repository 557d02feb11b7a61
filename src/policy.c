/*-------------------------------------------------------------------------
 *
 * policy.c
 *		The worker's policy as pure code.
 *
 * A decision turns what a request found (the response, as protocol.c read
 * it) into the change it makes to its task and the effects it has on the
 * worker: statistics, a hold, the latest error.  It depends only on its
 * arguments, so that a round can decide once and write twice, and the
 * regression tests can ask it directly (kling_policy_decide).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "policy.h"

/* Longest wait between two retries of one request. */
#define KLING_MAX_BACKOFF_MS (5 * 60 * 1000)

/* Longest hold of all sending. */
#define KLING_MAX_HOLD_MS 60000

/* Generation times are learned from at least this many recent tasks. */
#define KLING_HISTORY_MIN_SAMPLES 10

static void kling_decide_outcome(const KlingSent *sent, const KlingResponse *r,
								 const KlingPolicyParams *p, KlingTaskUpdate *u);

/*
 * Decide what a finished request means: the row update, whether it needs
 * writing at all, and its effects.  Transient failures back off and count
 * against max_attempts; a refused account holds everything.
 */
void
kling_decide(const KlingSent *sent, long http_status, const KlingResponse *r,
			 const KlingPolicyParams *p, KlingDecision *out)
{
	KlingTaskUpdate *u = &out->update;

	memset(out, 0, sizeof(*out));
	out->effects.request_failed = (http_status < 200 || http_status >= 300);
	out->effects.rate_limited = (http_status == 429);
	out->effects.retried = (r->outcome == KLING_OUTCOME_RETRY);
	out->effects.error = r->message;
	/* The account works again: the next hold starts short. */
	out->effects.account_works = (r->outcome == KLING_OUTCOME_ACCEPTED ||
								  r->outcome == KLING_OUTCOME_PENDING ||
								  r->outcome == KLING_OUTCOME_COMPLETED);
	if (r->outcome == KLING_OUTCOME_HOLD)
		out->effects.hold = r->message;

	u->id = sent->task_id;
	u->expect = sent->kind == KLING_REQUEST_CREATE ? KLING_EXPECT_SUBMITTING
		: KLING_EXPECT_AT_PROVIDER;
	u->result = r->result;
	u->next_attempt_ms = p->poll_interval_ms;
	kling_decide_outcome(sent, r, p, u);

	/*
	 * A poll that finds the task as the table has it (same status, no error
	 * to clear) writes nothing: the worker keeps the poll schedule.
	 */
	out->write = !(r->outcome == KLING_OUTCOME_PENDING && sent->attempts == 0 &&
				   (strcmp(r->state, "generating") == 0) == sent->generating);
}

/* The update for each outcome. */
static void
kling_decide_outcome(const KlingSent *sent, const KlingResponse *r,
					 const KlingPolicyParams *p, KlingTaskUpdate *u)
{
	bool		create = (sent->kind == KLING_REQUEST_CREATE);

	switch (r->outcome)
	{
		case KLING_OUTCOME_ACCEPTED:
			u->status = r->state;
			u->generation_id = r->generation_id;
			u->next_attempt_ms = Max(p->poll_interval_ms, sent->first_poll_ms);
			break;
		case KLING_OUTCOME_PENDING:
			u->status = r->state;

			/*
			 * Inside the learned window completions are near: look every
			 * 40% of the interval, so one waits under half an interval.
			 */
			if (sent->learned)
				u->next_attempt_ms = Max(p->poll_interval_ms * 2 / 5, 1);
			break;
		case KLING_OUTCOME_COMPLETED:
			u->status = "completed";
			u->video_url = r->video_url;
			break;
		case KLING_OUTCOME_FAILED:
			u->status = "failed";
			u->error = r->message;
			break;
		case KLING_OUTCOME_RETRY:

			/*
			 * Every refusal counts, so the backoff grows even for a 429
			 * (which never fails a task by itself), and Retry-After can
			 * lengthen the wait but not shorten it below the backoff.
			 */
			u->attempts = sent->attempts + 1;
			if (r->counts_attempt && u->attempts >= p->max_attempts)
			{
				u->status = "failed";
				u->error = psprintf("gave up after %d attempts: %s", u->attempts, r->message);
				break;
			}
			u->status = create ? "pending" : NULL;
			u->error = r->message;
			u->next_attempt_ms = Max(r->retry_after_ms,
									 kling_backoff_ms(u->attempts, p->poll_interval_ms, p->jitter));
			break;
		case KLING_OUTCOME_HOLD:
			u->status = create ? "pending" : NULL;
			u->attempts = sent->attempts;
			u->error = r->message;
			u->next_attempt_ms = p->hold_ms;
			break;
	}
}

/* Whether the update makes its task final. */
bool
kling_update_is_final(const KlingTaskUpdate *u)
{
	return u->status != NULL &&
		(strcmp(u->status, "completed") == 0 || strcmp(u->status, "failed") == 0);
}

/*
 * Exponential backoff from the poll interval, with +/-25% jitter so that
 * tasks that failed together do not retry together.
 */
int
kling_backoff_ms(int attempts, int poll_interval_ms, double jitter)
{
	double		delay = poll_interval_ms;

	for (int i = 1; i < attempts && delay < KLING_MAX_BACKOFF_MS; i++)
		delay *= 2;
	delay = Min(delay, KLING_MAX_BACKOFF_MS);
	delay *= 0.75 + 0.5 * jitter;
	return (int) delay;
}

/*
 * How long the next hold of all sending lasts: a poll interval at first,
 * doubled each time it is renewed, up to a minute.
 */
int
kling_next_hold_ms(int hold_ms, int poll_interval_ms)
{
	return hold_ms == 0 ? Min(poll_interval_ms, KLING_MAX_HOLD_MS)
		: Min(hold_ms * 2, KLING_MAX_HOLD_MS);
}

/*
 * When to poll a task first, from the history of its model and duration:
 * one poll interval before the time by which the quickest 1% of recent such
 * tasks had finished.  No poll before then is likely to find it done, so
 * the polls go where the completions are.  Returns false, and
 * *first_poll_ms = 0, without enough history.
 */
bool
kling_learned_first_poll(List *generation_times, const char *model,
						 const char *duration, int poll_interval_ms,
						 int *first_poll_ms)
{
	ListCell   *lc;

	*first_poll_ms = 0;
	if (model == NULL || duration == NULL)
		return false;
	foreach(lc, generation_times)
	{
		KlingGenerationTime *t = lfirst(lc);

		if (t->samples >= KLING_HISTORY_MIN_SAMPLES &&
			strcmp(t->model, model) == 0 && strcmp(t->duration, duration) == 0)
		{
			*first_poll_ms = Max(0, t->p1_ms - poll_interval_ms);
			return true;
		}
	}
	return false;
}
