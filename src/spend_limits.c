/*-------------------------------------------------------------------------
 *
 * spend_limits.c
 *		What one role may spend: tasks not final (kling.max_active_tasks)
 *		and tasks a day (kling.max_daily_tasks), checked as it enqueues.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "plan_cache.h"
#include "settings.h"
#include "spend_limits.h"

typedef enum KlingLimitPlanId
{
	KLING_PLAN_COUNT_ACTIVE,
	KLING_PLAN_COUNT_TODAY,
	KLING_NUM_LIMIT_PLANS
} KlingLimitPlanId;

static KlingPlan kling_limit_plans[KLING_NUM_LIMIT_PLANS] = {
	/*
	 * A task cancelled after it reached the provider is still being made
	 * (and billed) there: it counts until kling.task_timeout after sending.
	 */
	[KLING_PLAN_COUNT_ACTIVE] = {
		"SELECT count(*)::int4 FROM ("
		" (SELECT 1 FROM %1$s WHERE owner = $1::name"
		"  AND status IN ('pending', 'submitting', 'queued', 'generating') LIMIT $2)"
		" UNION ALL"
		" (SELECT 1 FROM %1$s WHERE owner = $1::name AND status = 'cancelled'"
		"  AND submitted_at > now() - $3 * interval '1 millisecond' LIMIT $2)) s",
		3, {TEXTOID, INT4OID, INT4OID}
	},
	/* The day is the server's (or kling.time_zone's), never the caller's. */
	[KLING_PLAN_COUNT_TODAY] = {
		"SELECT count(*)::int4 FROM (SELECT FROM %1$s WHERE owner = $1::name"
		" AND created_at >= date_trunc('day', now(), $3) LIMIT $2) s",
		3, {TEXTOID, INT4OID, TEXTOID}
	},
};

/*
 * How many rows a counting plan finds for the role, up to limit; the
 * third parameter is the plan's own.
 */
static int
kling_count_for(KlingLimitPlanId id, const char *role, int limit, Datum third)
{
	Datum		values[3] = {CStringGetTextDatum(role), Int32GetDatum(limit), third};
	bool		isnull;

	kling_execute(&kling_limit_plans[id], values, NULL, 1);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc,
									   1, &isnull));
}

/* The zone of the daily limit: kling.time_zone, else the server's log_timezone. */
static const char *
kling_day_time_zone(void)
{
	if (kling_time_zone != NULL && kling_time_zone[0] != '\0')
		return kling_time_zone;
	return pg_get_timezone_name(log_timezone);
}

/*
 * Refuse a task over the role's spend limits.  Rows this statement
 * already added count, so a bulk insert that goes over fails whole.
 */
void
kling_check_limits(const char *role)
{
	int			n;

	kling_check_active_limit(role);
	if (kling_max_daily_tasks > 0 &&
		(n = kling_count_for(KLING_PLAN_COUNT_TODAY, role, kling_max_daily_tasks,
							 CStringGetTextDatum(kling_day_time_zone()))) >= kling_max_daily_tasks)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" has submitted %d kling tasks today, counting those this transaction submitted",
						role, n),
				 errdetail("kling.max_daily_tasks allows %d tasks per role and day; the day is that of time zone \"%s\".",
						   kling_max_daily_tasks, kling_day_time_zone()),
				 errhint("Submit again tomorrow, or ask an administrator to raise kling.max_daily_tasks.")));
}

/* Refuse a task over the role's active limit (kling.max_active_tasks). */
void
kling_check_active_limit(const char *role)
{
	int			n;

	if (kling_max_active_tasks > 0 &&
		(n = kling_count_for(KLING_PLAN_COUNT_ACTIVE, role, kling_max_active_tasks,
							 Int32GetDatum(kling_task_timeout_ms))) >= kling_max_active_tasks)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("role \"%s\" already has %d kling tasks that are not final, counting those this transaction submitted",
						role, n),
				 errdetail("kling.max_active_tasks allows %d tasks waiting or running per role; tasks cancelled after they reached the provider count until kling.task_timeout after they were sent.",
						   kling_max_active_tasks),
				 errhint("Wait for tasks to finish, or ask an administrator to raise kling.max_active_tasks.")));
}
