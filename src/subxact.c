/*-------------------------------------------------------------------------
 *
 * subxact.c
 *		Running a step in a subtransaction that catches its error, so that
 *		one bad response, task or user object cannot abort the worker's
 *		round or the caller's transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "subxact.h"

/*
 * Run step(arg) in a subtransaction.  Returns NULL if it succeeded, or its
 * error message (allocated in the caller's context) if it failed, in which
 * case everything it did is rolled back, the user id included.  A
 * subtransaction that writes nothing assigns no XID, so this is cheap.
 */
char *
kling_try_in_subtransaction(KlingStep step, void *arg)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	char	   *volatile failure = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		step(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcontext);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcontext);
		CurrentResourceOwner = oldowner;
		failure = pstrdup(edata->message);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	return failure;
}
