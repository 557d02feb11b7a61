/*-------------------------------------------------------------------------
 *
 * plan_cache.h
 *		The kept SPI plans of the task store, and what they share: the
 *		extension's table, its owner, and where results are copied to.
 *		For the store's own files only.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_PLAN_CACHE_H
#define KLING_PLAN_CACHE_H

#include "executor/spi.h"

/* One statement of the store, prepared on first use and kept. */
typedef struct KlingPlan
{
	const char *sql;			/* %1$s stands for the qualified table name,
								 * %2$s for the extension's schema */
	int			nargs;
	Oid			argtypes[10];
	SPIPlanPtr	prepared;		/* NULL until first used */
	Oid			extension;		/* the extension it was prepared for */
} KlingPlan;

/* Where a worker round's results are copied: the context of begin_round. */
extern MemoryContext kling_round_context;

extern bool kling_table_refresh(void);
extern Oid	kling_table_owner(void);
extern Oid	kling_table_relid(void);
extern int	kling_execute(KlingPlan *plan, Datum *values, const char *nulls, long limit);
extern Portal kling_open_cursor(KlingPlan *plan, Datum *values, const char *nulls);
extern char *kling_result_text(uint64 row, int column);
extern int64 kling_result_int8(uint64 row, int column);
extern Datum kling_array(Datum *values, bool *nulls, int n, Oid type);
extern Datum kling_text_or_null(const char *value, bool *isnull);

#endif							/* KLING_PLAN_CACHE_H */
