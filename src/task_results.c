/*-------------------------------------------------------------------------
 *
 * task_results.c
 *		What the worker writes into kling_tasks: the provider's answers,
 *		tasks run out of time, tasks a stopped worker left half sent.
 *
 * Every write skips rows a user's open transaction holds (an uncommitted
 * kling_cancel), so that the worker never waits on it, and says which it
 * skipped.  Each call adds the tasks it made final to the caller's list.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "plan_cache.h"
#include "store.h"

/*
 * When a video URL stops working: a signed URL says (Expires=<unix time>,
 * or X-Amz-Date and X-Amz-Expires); else the provider's stated 30 days.
 */
#define KLING_URL_EXPIRY(url) \
	"coalesce(pg_catalog.to_timestamp(pg_catalog.substring(" url ", '[?&][Ee]xpires=([0-9]{9,11})(?:&|$)')::float8)," \
	" pg_catalog.to_timestamp(pg_catalog.substring(" url ", '[?&]X-Amz-Date=([0-9]{8}T[0-9]{6})Z'), 'YYYYMMDD\"T\"HH24MISS')::timestamp" \
	"  AT TIME ZONE 'UTC' + pg_catalog.substring(" url ", '[?&]X-Amz-Expires=([0-9]{1,7})(?:&|$)')::int * interval '1 second'," \
	" now() + interval '30 days')"

typedef enum KlingResultPlanId
{
	KLING_PLAN_FAIL_INTERRUPTED,
	KLING_PLAN_EXPIRE,
	KLING_PLAN_APPLY,
	KLING_PLAN_NOTE_CANCELLED,
	KLING_NUM_RESULT_PLANS
} KlingResultPlanId;

/*
 * Rows are locked in a subquery and then written by key: "id = ANY
 * (ARRAY(...))" makes that an index scan whatever the planner guesses of
 * the subquery's size (a join could scan the whole table).
 */
static KlingPlan kling_result_plans[KLING_NUM_RESULT_PLANS] = {
	/*
	 * Recovery tells which of the given tasks (NULL: all) it could not take
	 * yet.
	 */
	[KLING_PLAN_FAIL_INTERRUPTED] = {
		"WITH candidates AS (SELECT id FROM %1$s WHERE status = 'submitting'"
		"                    AND ($1 IS NULL OR id = ANY ($1))),"
		" failed AS (UPDATE %1$s SET status = 'failed', completed_at = now(), updated_at = now(),"
		"   next_attempt_at = now(),"
		"   error = 'outcome unknown: the server stopped while this task was being sent;"
		"   it was not sent again, to avoid paying twice'"
		"   WHERE id = ANY (ARRAY(SELECT id FROM %1$s WHERE id IN (SELECT id FROM candidates)"
		"                AND status = 'submitting' FOR UPDATE SKIP LOCKED))"
		"   RETURNING id)"
		" SELECT id, true FROM failed"
		" UNION ALL SELECT id, false FROM candidates WHERE id NOT IN (SELECT id FROM failed)",
		1, {INT8ARRAYOID}
	},
	[KLING_PLAN_EXPIRE] = {
		"UPDATE %1$s SET status = 'failed', completed_at = now(), updated_at = now(),"
		" next_attempt_at = now(),"
		" error = format('not finished by the provider within kling.task_timeout (%%s)',"
		"                $1 * interval '1 millisecond')"
		" WHERE id = ANY (ARRAY(SELECT id FROM %1$s WHERE status IN ('queued', 'generating')"
		"              AND submitted_at < now() - $1 * interval '1 millisecond'"
		"              FOR UPDATE SKIP LOCKED))"
		" RETURNING id",
		1, {INT4OID}
	},

	/*
	 * Returns (n, true) for each result written and (n, false) for each
	 * whose task a user's open transaction holds (written in a later
	 * round); a task that left the expected state is neither.  Each row is
	 * locked as it is joined, by its key: no join of the results with
	 * themselves (which grew with the square of a round's results).
	 */
	[KLING_PLAN_APPLY] = {
		"WITH u AS (SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9) WITH ORDINALITY"
		"      AS u(id, status, generation_id, video_url, result, error, attempts, next_ms,"
		"           from_create, n)),"
		" written AS (UPDATE %1$s t SET status = coalesce(u.status, t.status),"
		" generation_id = coalesce(u.generation_id, t.generation_id),"
		" video_url = coalesce(u.video_url, t.video_url),"
		" result = coalesce(u.result, t.result),"
		" error = u.error,"
		" attempts = u.attempts,"
		" next_attempt_at = CASE WHEN u.status IN ('completed', 'failed', 'cancelled') THEN now()"
		"                   ELSE now() + u.next_ms * interval '1 millisecond' END,"
		" submitted_at = CASE WHEN t.status = 'submitting' AND u.status IN ('queued', 'generating')"
		"                THEN now() ELSE t.submitted_at END,"
		" completed_at = CASE WHEN u.status IN ('completed', 'failed', 'cancelled')"
		"                THEN now() END,"
		" keep_state = CASE WHEN u.status = 'completed' AND (t.opts ->> 'keep') = 'true'"
		"              AND coalesce(u.video_url, t.video_url) IS NOT NULL THEN 'waiting'"
		"              ELSE t.keep_state END,"
		" expires_at = CASE WHEN u.status = 'completed' THEN " KLING_URL_EXPIRY("coalesce(u.video_url, t.video_url)")
		"              ELSE t.expires_at END,"
		" updated_at = now()"
		" FROM (SELECT u.* FROM u JOIN %1$s l ON l.id = u.id"
		"       WHERE CASE WHEN u.from_create THEN l.status = 'submitting'"
		"             ELSE l.status IN ('queued', 'generating') END"
		"       FOR UPDATE OF l SKIP LOCKED) u"
		" WHERE t.id = u.id"
		" RETURNING u.n)"
		" SELECT n, true FROM written"
		" UNION ALL SELECT u.n, false FROM u JOIN %1$s t ON t.id = u.id"
		" WHERE u.n NOT IN (SELECT n FROM written)"
		" AND CASE WHEN u.from_create THEN t.status = 'submitting'"
		"     ELSE t.status IN ('queued', 'generating') END",
		9, {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, JSONBARRAYOID,
			TEXTARRAYOID, INT4ARRAYOID, INT4ARRAYOID, BOOLARRAYOID}
	},
	[KLING_PLAN_NOTE_CANCELLED] = {
		"UPDATE %1$s SET generation_id = $2, result = $3, submitted_at = now(), updated_at = now()"
		" WHERE id = $1 AND status = 'cancelled' AND generation_id IS NULL",
		3, {INT8OID, TEXTOID, JSONBOID}
	},
};

/*
 * Take over from a worker that stopped, when a worker starts serving.
 * Tasks it left in 'submitting' may or may not have reached the provider, so
 * they fail rather than risk a second bill; returns how many, and adds them
 * to *made_final.
 *
 * *held gets the tasks a user's open transaction holds (as an int8[], or
 * (Datum) 0 if none): call again with only = that array in a later round
 * to finish; only = (Datum) 0 takes every task left 'submitting'.
 */
int
kling_store_recover(Datum only, Datum *held, KlingIds *made_final)
{
	Datum		values[1] = {only};
	char		nulls[1] = {only == (Datum) 0 ? 'n' : ' '};
	int64	   *held_ids;
	int			nheld = 0;
	int			interrupted = 0;

	kling_execute(&kling_result_plans[KLING_PLAN_FAIL_INTERRUPTED], values, nulls, 0);
	held_ids = palloc(Max(SPI_processed, 1) * sizeof(int64));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
													 SPI_tuptable->tupdesc, 1, &isnull));

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull)))
		{
			kling_ids_add(made_final, id);
			interrupted++;
		}
		else
			held_ids[nheld++] = id;
	}
	if (nheld > 0)
	{
		MemoryContext spi = MemoryContextSwitchTo(kling_round_context);

		*held = kling_store_id_array(held_ids, nheld);
		MemoryContextSwitchTo(spi);
	}
	else
		*held = (Datum) 0;
	return interrupted;
}

/* Fail the tasks the provider has held longer than the task timeout. */
void
kling_store_expire(int task_timeout_ms, KlingIds *made_final)
{
	Datum		values[1] = {Int32GetDatum(task_timeout_ms)};

	kling_execute(&kling_result_plans[KLING_PLAN_EXPIRE], values, NULL, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
		kling_ids_add(made_final, kling_result_int8(i, 1));
}

/*
 * Write the round's results, all in one statement.  A task that left the
 * expected state meanwhile (it was cancelled) is not changed, but still
 * records the generation id its create got, for the history.  A task that a
 * user's open transaction holds is not waited for: its update is marked
 * held, for the caller to write in a later round.  Each update says what
 * became of it; the tasks made final are added to *made_final.
 */
void
kling_store_apply_all(KlingTaskUpdate *updates, int n, KlingIds *made_final)
{
	enum
	{
		ID, STATUS, GENERATION_ID, VIDEO_URL, RESULT, ERROR_TEXT, ATTEMPTS, NEXT_MS,
		FROM_CREATE, NCOLUMNS
	};
	static const Oid types[NCOLUMNS] = {INT8OID, TEXTOID, TEXTOID, TEXTOID, JSONBOID,
	TEXTOID, INT4OID, INT4OID, BOOLOID};
	Datum	   *values[NCOLUMNS];
	bool	   *nulls[NCOLUMNS];
	Datum		params[NCOLUMNS];

	if (n == 0)
		return;

	for (int i = 0; i < n; i++)
		updates[i].written = KLING_NOT_WRITTEN;
	for (int c = 0; c < NCOLUMNS; c++)
	{
		values[c] = palloc(n * sizeof(Datum));
		nulls[c] = palloc0(n * sizeof(bool));
	}
	for (int i = 0; i < n; i++)
	{
		const KlingTaskUpdate *u = &updates[i];

		values[ID][i] = Int64GetDatum(u->id);
		values[STATUS][i] = kling_text_or_null(u->status, &nulls[STATUS][i]);
		values[GENERATION_ID][i] = kling_text_or_null(u->generation_id, &nulls[GENERATION_ID][i]);
		values[VIDEO_URL][i] = kling_text_or_null(u->video_url, &nulls[VIDEO_URL][i]);
		nulls[RESULT][i] = (u->result == NULL);
		values[RESULT][i] = JsonbPGetDatum(u->result);
		values[ERROR_TEXT][i] = kling_text_or_null(u->error, &nulls[ERROR_TEXT][i]);
		values[ATTEMPTS][i] = Int32GetDatum(u->attempts);
		values[NEXT_MS][i] = Int32GetDatum(u->next_attempt_ms);
		values[FROM_CREATE][i] = BoolGetDatum(u->expect == KLING_EXPECT_SUBMITTING);
	}
	for (int c = 0; c < NCOLUMNS; c++)
		params[c] = kling_array(values[c], nulls[c], n, types[c]);

	kling_execute(&kling_result_plans[KLING_PLAN_APPLY], params, NULL, 0);

	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		i = kling_result_int8(r, 1);

		updates[i - 1].written =
			DatumGetBool(SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull))
			? KLING_WRITTEN : KLING_HELD;
	}

	for (int i = 0; i < n; i++)
	{
		const KlingTaskUpdate *u = &updates[i];

		if (u->written == KLING_WRITTEN)
		{
			if (u->status != NULL &&
				(strcmp(u->status, "completed") == 0 || strcmp(u->status, "failed") == 0))
				kling_ids_add(made_final, u->id);
		}
		else if (u->written == KLING_NOT_WRITTEN && u->expect == KLING_EXPECT_SUBMITTING && u->generation_id != NULL)
		{
			Datum		note[3];
			char		note_nulls[3] = {' ', ' ', u->result ? ' ' : 'n'};

			note[0] = Int64GetDatum(u->id);
			note[1] = CStringGetTextDatum(u->generation_id);
			note[2] = u->result ? JsonbPGetDatum(u->result) : (Datum) 0;
			kling_execute(&kling_result_plans[KLING_PLAN_NOTE_CANCELLED], note, note_nulls, 0);
		}
	}
}
