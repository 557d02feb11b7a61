/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *		Statements that change what the launcher serves.
 *
 * CREATE EXTENSION kling wakes the launcher as it commits, so that the
 * database is served at once; DROP EXTENSION kling wakes the worker, which
 * finds the extension gone and stops; CREATE DATABASE wakes the launcher;
 * CREATE, ALTER or DROP SUBSCRIPTION wakes both: the worker stops if
 * kling_tasks is now a subscriber's copy, and one comes back if it is no
 * longer.  A prepared transaction's wakes are dropped
 * at PREPARE, so COMMIT PREPARED wakes both (Citus commits that way on its
 * worker nodes, CREATE EXTENSION and inserts alike).
 *
 * DROP DATABASE, ALTER DATABASE ... RENAME or SET TABLESPACE, and CREATE
 * DATABASE ... TEMPLATE need the database to themselves: before one of
 * them runs, kling's processes leave that database, and stay out until the
 * statement ends, so it works as it would without kling.  Only for a role
 * that may run the statement: anyone else gets PostgreSQL's own error and
 * cannot make a worker stop.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "commands/defrem.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/syscache.h"

#include "compat.h"
#include "shmem.h"
#include "sql_api.h"
#include "utility_hook.h"

/* How long a statement waits for kling's processes to leave a database. */
#define KLING_LEAVE_TIMEOUT_MS 10000

static ProcessUtility_hook_type prev_process_utility = NULL;

static void kling_process_utility(PlannedStmt *pstmt, const char *queryString,
								  bool readOnlyTree, ProcessUtilityContext context,
								  ParamListInfo params, QueryEnvironment *queryEnv,
								  DestReceiver *dest, QueryCompletion *qc);
static const char *kling_database_needed_alone(Node *parsetree);
static bool kling_names_kling(List *objects);

/* Install the hook; called from _PG_init. */
void
kling_utility_hook_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = kling_process_utility;
}

/* The database a statement needs to itself, or NULL. */
static const char *
kling_database_needed_alone(Node *parsetree)
{
	ListCell   *lc;

	switch (nodeTag(parsetree))
	{
		case T_DropdbStmt:
			return ((DropdbStmt *) parsetree)->dbname;
		case T_RenameStmt:
			if (((RenameStmt *) parsetree)->renameType == OBJECT_DATABASE)
				return ((RenameStmt *) parsetree)->subname;
			return NULL;
		case T_AlterDatabaseStmt:
			foreach(lc, ((AlterDatabaseStmt *) parsetree)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "tablespace") == 0)
					return ((AlterDatabaseStmt *) parsetree)->dbname;
			return NULL;
		case T_CreatedbStmt:
			foreach(lc, ((CreatedbStmt *) parsetree)->options)
				if (strcmp(((DefElem *) lfirst(lc))->defname, "template") == 0)
					return defGetString(lfirst(lc));
			return NULL;
		default:
			return NULL;
	}
}

/* Whether a DROP EXTENSION names kling. */
static bool
kling_names_kling(List *objects)
{
	ListCell   *lc;

	foreach(lc, objects)
		if (strcmp(strVal(lfirst(lc)), "kling") == 0)
			return true;
	return false;
}

/* Run the statement, with what kling must do around it. */
static void
kling_process_utility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;
	const char *alone = kling_database_needed_alone(parsetree);
	Oid			paused = InvalidOid;

	if (IsA(parsetree, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) parsetree)->extname, "kling") == 0)
		kling_wake_launcher_at_commit();
	else if (IsA(parsetree, DropStmt) &&
			 ((DropStmt *) parsetree)->removeType == OBJECT_EXTENSION &&
			 kling_names_kling(((DropStmt *) parsetree)->objects))
		kling_wake_worker_at_commit();
	else if (IsA(parsetree, CreateSubscriptionStmt) || IsA(parsetree, AlterSubscriptionStmt) ||
			 IsA(parsetree, DropSubscriptionStmt))
		kling_wake_launcher_at_commit();	/* kling_tasks may be subscribed, or no more */

	if (alone != NULL)
	{
		Oid			database_id = get_database_oid(alone, true);

		/* Only for a role that owns it: nobody else may stop its worker. */
		if (OidIsValid(database_id) &&
			kling_database_ownercheck(database_id, GetUserId()))
		{
			paused = database_id;
			(void) kling_pause_database(database_id, KLING_LEAVE_TIMEOUT_MS);
		}
	}

	PG_TRY();
	{
		if (prev_process_utility)
			prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
								 queryEnv, dest, qc);
		else
			standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
									queryEnv, dest, qc);
	}
	PG_FINALLY();
	{
		if (OidIsValid(paused))
			kling_resume_database(paused);
	}
	PG_END_TRY();

	if (IsA(parsetree, CreatedbStmt))
		kling_wake_launcher();
	else if (IsA(parsetree, TransactionStmt) &&
			 ((TransactionStmt *) parsetree)->kind == TRANS_STMT_COMMIT_PREPARED)
		kling_wake_after_commit_prepared();
	/* A database left out keeps its tasks pending: say so now. */
	if (IsA(parsetree, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) parsetree)->extname, "kling") == 0)
		kling_warn_if_not_served();
}
