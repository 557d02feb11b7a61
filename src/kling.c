/*-------------------------------------------------------------------------
 *
 * kling.c
 *		Module entry point: defines the settings, and sets up the shared
 *		memory and the launcher when the server preloads the library.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"

#include "compat.h"
#include "launcher.h"
#include "secret.h"
#include "settings.h"
#include "shmem.h"
#include "utility_hook.h"

KLING_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Module load.  The library works only when preloaded: the worker, its
 * shared memory and a setting that takes a restart exist only then.  Loaded
 * later (a CREATE EXTENSION on a server without it), it says so in a plain
 * error, as pg_cron does.  Under pg_upgrade it does nothing at all: no
 * worker may run, nor send anything, while the cluster is being upgraded.
 */
void
_PG_init(void)
{
	if (IsBinaryUpgrade)
		return;
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("kling must be loaded via shared_preload_libraries"),
				 errhint("Add kling to shared_preload_libraries in postgresql.conf (shared_preload_libraries = 'kling'), then restart the server.")));

	kling_define_settings();
	kling_secret_init();
	kling_shmem_register();
	kling_launcher_register();
	kling_utility_hook_install();
}
