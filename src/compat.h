/*-------------------------------------------------------------------------
 *
 * compat.h
 *		What differs between the PostgreSQL versions kling builds against
 *		(15 to 18), in one place, so that the rest of the code reads as if
 *		there were one version.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_COMPAT_H
#define KLING_COMPAT_H

#include "catalog/pg_database_d.h"
#include "catalog/pg_proc_d.h"
#include "utils/acl.h"

/* 16 folded the per-catalog ACL checks into object_aclcheck(). */
#if PG_VERSION_NUM >= 160000
#define kling_proc_aclcheck(proc, role, mode) \
	object_aclcheck(ProcedureRelationId, (proc), (role), (mode))
#define kling_database_ownercheck(database, role) \
	object_ownercheck(DatabaseRelationId, (database), (role))
#else
#define kling_proc_aclcheck(proc, role, mode) \
	pg_proc_aclcheck((proc), (role), (mode))
#define kling_database_ownercheck(database, role) \
	pg_database_ownercheck((database), (role))
#endif

/*
 * 17 ties a wait event set to a resource owner; the worker's set lives as
 * long as the process, so it has none.
 */
#if PG_VERSION_NUM >= 170000
#define kling_create_wait_event_set(nevents) CreateWaitEventSet(NULL, (nevents))
#else
#define kling_create_wait_event_set(nevents) CreateWaitEventSet(TopMemoryContext, (nevents))
#endif

/* 17 lets an extension name its wait events in pg_stat_activity. */
#if PG_VERSION_NUM >= 170000
#include "utils/wait_event.h"
#define kling_new_wait_event(name) WaitEventExtensionNew(name)
#else
#define kling_new_wait_event(name) ((void) (name), PG_WAIT_EXTENSION)
#endif

/* 18 records the module's name and version (SELECT * FROM pg_get_loaded_modules()). */
#ifdef PG_MODULE_MAGIC_EXT
#define KLING_MODULE_MAGIC PG_MODULE_MAGIC_EXT(.name = "kling", .version = KLING_VERSION)
#else
#define KLING_MODULE_MAGIC PG_MODULE_MAGIC
#endif

#endif							/* KLING_COMPAT_H */
