/*-------------------------------------------------------------------------
 *
 * monitor.c
 *		kling_worker_info(): the worker's health, read from shared memory,
 *		behind the kling_worker view.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "shmem.h"

PG_FUNCTION_INFO_V1(kling_worker_info);

/*
 * kling_worker_info() RETURNS SETOF record: one row while a worker runs,
 * none otherwise.
 */
Datum
kling_worker_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	KlingWorkerStats stats;
	Datum		values[12];
	bool		nulls[12] = {0};
	char	   *database;

	InitMaterializedSRF(fcinfo, 0);
	if (!kling_stats_read(&stats))
		return (Datum) 0;

	database = get_database_name(stats.database_id);
	values[0] = Int32GetDatum(stats.pid);
	values[1] = database ? DirectFunctionCall1(namein, CStringGetDatum(database)) : (nulls[1] = true, (Datum) 0);
	values[2] = CStringGetTextDatum(stats.state);
	values[3] = TimestampTzGetDatum(stats.started_at);
	values[4] = TimestampTzGetDatum(stats.last_round_at);
	nulls[4] = (stats.last_round_at == 0);
	values[5] = Int32GetDatum(stats.requests_in_flight);
	values[6] = Int64GetDatum(stats.requests_sent);
	values[7] = Int64GetDatum(stats.requests_failed);
	values[8] = Int64GetDatum(stats.requests_retried);
	values[9] = Int64GetDatum(stats.rate_limited);
	values[10] = CStringGetTextDatum(stats.last_error);
	nulls[10] = (stats.last_error[0] == '\0');
	values[11] = TimestampTzGetDatum(stats.last_error_at);
	nulls[11] = (stats.last_error_at == 0);

	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	return (Datum) 0;
}
