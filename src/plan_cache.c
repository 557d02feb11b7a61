/*-------------------------------------------------------------------------
 *
 * plan_cache.c
 *		The kept SPI plans of the task store.
 *
 * Every statement of the store names the table as %1$s; it is prepared on
 * first use with the table of the installed extension, and kept.  A plan
 * made for an extension that was dropped (and maybe created anew) is made
 * again.  The worker's calls run inside one transaction per round
 * (kling_store_begin_round, reads and writes, kling_store_end_round); what
 * they return is allocated in the memory context current at begin_round.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "plan_cache.h"
#include "sandbox.h"
#include "store.h"

MemoryContext kling_round_context = NULL;

static Oid	kling_extension = InvalidOid;
static char kling_table_name[2 * NAMEDATALEN + 16];
static char kling_schema_name[2 * NAMEDATALEN + 4];
static Oid	kling_owner = InvalidOid;
static Oid	kling_table_oid = InvalidOid;
static bool kling_table_known = false;
static bool kling_callback_registered = false;
static int	kling_round_nestlevel = 0;

static void kling_relcache_invalidated(Datum arg, Oid relid);

/*
 * Make sure the extension's table and its owner are known.  Returns false
 * if the extension is not installed in this database.  Runs inside SPI.
 */
bool
kling_table_refresh(void)
{
	Oid			ext;
	Datum		arg;
	bool		isnull;

	/* Known good until the table's relcache entry is invalidated. */
	if (kling_table_known)
		return true;
	if (!kling_callback_registered)
	{
		CacheRegisterRelcacheCallback(kling_relcache_invalidated, (Datum) 0);
		kling_callback_registered = true;
	}

	ext = get_extension_oid("kling", true);
	if (ext == kling_extension && OidIsValid(ext))
	{
		kling_table_known = true;
		return true;
	}
	kling_extension = InvalidOid;
	if (!OidIsValid(ext))
		return false;

	arg = ObjectIdGetDatum(ext);
	if (SPI_execute_with_args("SELECT pg_catalog.quote_ident(n.nspname) || '.kling_tasks',"
							  " c.relowner, c.oid, pg_catalog.quote_ident(n.nspname)"
							  " FROM pg_catalog.pg_extension e"
							  " JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
							  " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid"
							  "  AND c.relname = 'kling_tasks'"
							  " WHERE e.oid = $1",
							  1, (Oid[]) {OIDOID}, &arg, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not find the table of extension \"kling\"");

	snprintf(kling_table_name, sizeof(kling_table_name), "%s",
			 TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 1, &isnull)));
	snprintf(kling_schema_name, sizeof(kling_schema_name), "%s",
			 TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
											   SPI_tuptable->tupdesc, 4, &isnull)));
	kling_owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
												 SPI_tuptable->tupdesc, 2, &isnull));
	kling_table_oid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													 SPI_tuptable->tupdesc, 3, &isnull));
	kling_extension = ext;
	kling_table_known = true;
	return true;
}

/*
 * The table changed or went away (DROP EXTENSION): look the extension up
 * again before the next statement.
 */
static void
kling_relcache_invalidated(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == kling_table_oid)
		kling_table_known = false;
}

/* The owner of the extension's table (after kling_table_refresh). */
Oid
kling_table_owner(void)
{
	return kling_owner;
}

/* The extension's table (after kling_table_refresh). */
Oid
kling_table_relid(void)
{
	return kling_table_oid;
}

/*
 * The installed extension, an id that changes when it is dropped and
 * created anew; InvalidOid if it is not installed.  Inside a round.
 */
Oid
kling_store_extension(void)
{
	return kling_table_refresh() ? kling_extension : InvalidOid;
}

/* The kept plan of a statement, prepared for the installed extension. */
static SPIPlanPtr
kling_prepared(KlingPlan *plan)
{
	if (!kling_table_refresh())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"kling\" is not installed in this database")));

	if (plan->prepared != NULL && plan->extension != kling_extension)
	{
		SPI_freeplan(plan->prepared);
		plan->prepared = NULL;
	}
	if (plan->prepared == NULL)
	{
		SPIPlanPtr	prepared;

		prepared = SPI_prepare(psprintf(plan->sql, kling_table_name, kling_schema_name), plan->nargs,
							   plan->argtypes);
		if (prepared == NULL)
			elog(ERROR, "could not prepare kling statement: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(prepared);
		plan->prepared = prepared;
		plan->extension = kling_extension;
	}
	return plan->prepared;
}

/*
 * Run a kept plan; returns the SPI result code.  Never read-only: each
 * statement takes a new snapshot and so sees the round's earlier writes.
 */
int
kling_execute(KlingPlan *plan, Datum *values, const char *nulls, long limit)
{
	int			rc = SPI_execute_plan(kling_prepared(plan), values, nulls, false, limit);

	if (rc < 0)
		elog(ERROR, "kling statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

/*
 * Open a cursor on a kept plan, for results too large to hold at once;
 * fetch with SPI_cursor_fetch, close with SPI_cursor_close.
 */
Portal
kling_open_cursor(KlingPlan *plan, Datum *values, const char *nulls)
{
	return SPI_cursor_open(NULL, kling_prepared(plan), values, nulls, false);
}

/* A text column of a row of the last result, copied to the round context, or NULL. */
char *
kling_result_text(uint64 row, int column)
{
	MemoryContext spi = MemoryContextSwitchTo(kling_round_context);
	char	   *value = SPI_getvalue(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column);

	MemoryContextSwitchTo(spi);
	return value;
}

/* A bigint column of a row of the last result (never null). */
int64
kling_result_int8(uint64 row, int column)
{
	bool		isnull;

	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
									   column, &isnull));
}

/* A one-dimensional array of n values of the given type, for a plan's parameter. */
Datum
kling_array(Datum *values, bool *nulls, int n, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			lbound = 1;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, &n, &lbound,
											  type, typlen, typbyval, typalign));
}

/* A text value, or a null when NULL. */
Datum
kling_text_or_null(const char *value, bool *isnull)
{
	*isnull = (value == NULL);
	return value ? CStringGetTextDatum(value) : (Datum) 0;
}

/* An int8[] of the given ids, for a plan's parameter. */
Datum
kling_store_id_array(const int64 *ids, int n)
{
	Datum	   *values = palloc(Max(n, 1) * sizeof(Datum));

	for (int i = 0; i < n; i++)
		values[i] = Int64GetDatum(ids[i]);
	return kling_array(values, NULL, n, INT8OID);
}

/*
 * Begin a worker round: a transaction, SPI, a snapshot.  Returns false if
 * the extension is not installed; end_round must be called either way.
 */
bool
kling_store_begin_round(void)
{
	kling_round_context = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	kling_round_nestlevel = kling_pin_search_path();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	return kling_table_refresh();
}

/* Commit the worker round. */
void
kling_store_end_round(void)
{
	SPI_finish();
	kling_unpin_settings(kling_round_nestlevel);
	PopActiveSnapshot();
	CommitTransactionCommand();
	MemoryContextSwitchTo(kling_round_context);
}

/* Add an id to a list of ids; the list lives in the round's context. */
void
kling_ids_add(KlingIds *ids, int64 id)
{
	if (ids->n == ids->cap)
	{
		ids->cap = Max(16, ids->cap * 2);
		ids->ids = ids->ids == NULL
			? MemoryContextAlloc(kling_round_context, ids->cap * sizeof(int64))
			: repalloc(ids->ids, ids->cap * sizeof(int64));
	}
	ids->ids[ids->n++] = id;
}
