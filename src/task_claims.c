/*-------------------------------------------------------------------------
 *
 * task_claims.c
 *		What the worker takes from kling_tasks: pending tasks to send (marked
 *		'submitting' before they go), the tasks at the provider to poll, and
 *		how many count against kling.max_in_flight.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "plan_cache.h"
#include "store.h"

typedef enum KlingClaimPlanId
{
	KLING_PLAN_CLAIM_CREATES,
	KLING_PLAN_AT_PROVIDER,
	KLING_PLAN_COUNT_IN_FLIGHT,
	KLING_PLAN_NEXT_SEND,
	KLING_PLAN_SUBSCRIBED,
	KLING_NUM_CLAIM_PLANS
} KlingClaimPlanId;

/* Tasks at the provider read at once, to build the poll schedule. */
#define KLING_AT_PROVIDER_BATCH 1000

/*
 * Pending tasks are taken in turns across their owners, counting the tasks
 * each has in flight as turns taken (an owner with none goes before one
 * with two), so that a role with ten thousand pending tasks does not hold
 * back another role's one by more than one freed place: the owners are
 * walked through kling_tasks_send_owner_idx, one index probe each, and,
 * when more than one owner waits, their tasks in flight are counted through
 * kling_tasks_owner_in_flight_idx, up to the claim's limit (more would not
 * change the order).
 * Claimed rows are locked in a subquery and then written by key: "id = ANY
 * (ARRAY(...))" makes that an index scan, where a join was planned as a
 * scan of the whole table.  Nothing is claimed from a table that a logical
 * replication subscription fills: those are another server's tasks.
 */
static KlingPlan kling_claim_plans[KLING_NUM_CLAIM_PLANS] = {
	[KLING_PLAN_CLAIM_CREATES] = {
		"WITH RECURSIVE owners(owner) AS ("
		"  (SELECT owner FROM %1$s WHERE status = 'pending' ORDER BY owner LIMIT 1)"
		"  UNION ALL"
		"  SELECT (SELECT t.owner FROM %1$s t WHERE t.status = 'pending' AND t.owner > o.owner"
		"          ORDER BY t.owner LIMIT 1)"
		"  FROM owners o WHERE o.owner IS NOT NULL),"
		" waiting AS (SELECT owner FROM owners WHERE owner IS NOT NULL)"
		"UPDATE %1$s SET status = 'submitting', updated_at = now()"
		" WHERE id = ANY (ARRAY("
		"   SELECT c.id FROM waiting o"
		"   CROSS JOIN LATERAL (SELECT CASE WHEN (SELECT count(*) FROM waiting) > 1"
		"     THEN (SELECT count(*) FROM (SELECT FROM %1$s f WHERE f.owner = o.owner"
		"           AND f.status IN ('submitting', 'queued', 'generating') LIMIT $1) f)"
		"     ELSE 0 END AS n) busy"
		"   CROSS JOIN LATERAL ("
		"     SELECT l.id, busy.n + row_number() OVER (ORDER BY l.id) AS turn FROM ("
		"       SELECT t.id FROM %1$s t WHERE t.status = 'pending' AND t.owner = o.owner"
		"       AND t.next_attempt_at <= now()"
		"       AND NOT EXISTS (SELECT FROM pg_catalog.pg_subscription_rel WHERE srrelid = $2)"
		"       ORDER BY t.id LIMIT $1 FOR UPDATE SKIP LOCKED) l) c"
		"   ORDER BY c.turn, c.id LIMIT $1))"
		" RETURNING id, prompt, opts, attempts",
		2, {INT4OID, OIDOID}
	},
	[KLING_PLAN_AT_PROVIDER] = {
		"SELECT id, status, generation_id, attempts, next_attempt_at,"
		" opts ->> 'model', opts ->> 'duration'"
		" FROM %1$s WHERE status IN ('queued', 'generating')",
		0, {0}
	},
	[KLING_PLAN_COUNT_IN_FLIGHT] = {
		"SELECT ((SELECT count(*) FROM %1$s WHERE status IN ('queued', 'generating'))"
		" + (SELECT count(*) FROM %1$s WHERE status = 'submitting'))::int4",
		0, {0}
	},
	[KLING_PLAN_NEXT_SEND] = {
		"SELECT next_attempt_at FROM %1$s WHERE status = 'pending'"
		" ORDER BY next_attempt_at LIMIT 1",
		0, {0}
	},
	[KLING_PLAN_SUBSCRIBED] = {
		"SELECT EXISTS (SELECT FROM pg_catalog.pg_subscription_rel WHERE srrelid = $1)",
		1, {OIDOID}
	},
};

/*
 * Claim up to limit pending tasks to send, in turns across owners, marking them
 * 'submitting'; copied into the round's context.  The mark commits before
 * any request goes out.
 */
List *
kling_store_claim_creates(int limit)
{
	Datum		values[2] = {Int32GetDatum(limit), ObjectIdGetDatum(kling_table_relid())};
	MemoryContext spi;
	List	   *claims = NIL;

	kling_execute(&kling_claim_plans[KLING_PLAN_CLAIM_CREATES], values, NULL, 0);
	spi = MemoryContextSwitchTo(kling_round_context);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		KlingClaim *claim = palloc0(sizeof(KlingClaim));
		bool		isnull;

		claim->id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		claim->prompt = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
		claim->opts = DatumGetJsonbPCopy(SPI_getbinval(tuple, desc, 3, &isnull));
		claim->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		claims = lappend(claims, claim);
	}
	MemoryContextSwitchTo(spi);
	return claims;
}

/*
 * Visit every task at the provider, to build the worker's poll schedule
 * from: at start, and now and then to learn of tasks cancelled or deleted
 * meanwhile.  A batch at a time, so that memory stays small however many
 * there are.  Reads only: the schedule lives in the worker's memory, and a
 * poll that finds nothing new writes nothing.
 */
void
kling_store_visit_at_provider(KlingVisitTask visit, void *arg)
{
	MemoryContext batch = AllocSetContextCreate(CurrentMemoryContext, "kling tasks at provider",
												ALLOCSET_DEFAULT_SIZES);
	Portal		portal = kling_open_cursor(&kling_claim_plans[KLING_PLAN_AT_PROVIDER], NULL, NULL);

	for (;;)
	{
		MemoryContext spi;

		SPI_cursor_fetch(portal, true, KLING_AT_PROVIDER_BATCH);
		if (SPI_processed == 0)
			break;
		spi = MemoryContextSwitchTo(batch);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			HeapTuple	tuple = SPI_tuptable->vals[i];
			TupleDesc	desc = SPI_tuptable->tupdesc;
			KlingAtProvider t;
			bool		isnull;

			t.id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
			t.generating = strcmp(SPI_getvalue(tuple, desc, 2), "generating") == 0;
			t.generation_id = SPI_getvalue(tuple, desc, 3);
			t.attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
			t.next_attempt_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 5, &isnull));
			t.model = SPI_getvalue(tuple, desc, 6);
			t.duration = SPI_getvalue(tuple, desc, 7);
			visit(&t, arg);
		}
		MemoryContextSwitchTo(spi);
		MemoryContextReset(batch);
		SPI_freetuptable(SPI_tuptable);
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(batch);
}

/* Tasks that count against kling.max_in_flight. */
int
kling_store_count_in_flight(void)
{
	bool		isnull;

	kling_execute(&kling_claim_plans[KLING_PLAN_COUNT_IN_FLIGHT], NULL, NULL, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* When the next pending task is due to be sent; false if none waits. */
bool
kling_store_next_send(TimestampTz *due)
{
	bool		isnull = true;

	kling_execute(&kling_claim_plans[KLING_PLAN_NEXT_SEND], NULL, NULL, 1);
	if (SPI_processed > 0)
		*due = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 1, &isnull));
	return !isnull;
}

/*
 * Whether a logical replication subscription fills kling_tasks here: then
 * its rows are the publisher's tasks, and this server must not send them.
 */
bool
kling_store_subscribed(void)
{
	Datum		values[1] = {ObjectIdGetDatum(kling_table_relid())};
	bool		isnull;

	kling_execute(&kling_claim_plans[KLING_PLAN_SUBSCRIBED], values, NULL, 1);
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
