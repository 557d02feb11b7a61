/*-------------------------------------------------------------------------
 *
 * utility_hook.c
 *		Noticing CREATE EXTENSION kling as it commits.
 *
 * The launcher looks for a missing database, and the worker for a missing
 * extension, only now and then.  A CREATE EXTENSION kling wakes both when
 * it commits, so that a database is served at once, however late it was
 * created.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/parsenodes.h"
#include "tcop/utility.h"

#include "shmem.h"
#include "utility_hook.h"

static ProcessUtility_hook_type prev_process_utility = NULL;

static void kling_process_utility(PlannedStmt *pstmt, const char *queryString,
								  bool readOnlyTree, ProcessUtilityContext context,
								  ParamListInfo params, QueryEnvironment *queryEnv,
								  DestReceiver *dest, QueryCompletion *qc);

/* Install the hook; called from _PG_init. */
void
kling_utility_hook_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = kling_process_utility;
}

/* Run the statement; a CREATE EXTENSION kling asks for the wake-up. */
static void
kling_process_utility(PlannedStmt *pstmt, const char *queryString,
					  bool readOnlyTree, ProcessUtilityContext context,
					  ParamListInfo params, QueryEnvironment *queryEnv,
					  DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, CreateExtensionStmt) &&
		strcmp(((CreateExtensionStmt *) parsetree)->extname, "kling") == 0)
		kling_wake_launcher_at_commit();

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);
}
