/*-------------------------------------------------------------------------
 *
 * settings.c
 *		The kling.* settings: their variables, definitions and checks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "executor/spi.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "utils/guc.h"
#include "utils/varlena.h"

#include "settings.h"
#include "video_settings.h"

char	   *kling_api_key = NULL;
char	   *kling_base_url = NULL;
int			kling_api_route = KLING_ROUTE_GENERATION;
char	   *kling_databases = NULL;
char	   *kling_database_name = NULL;
int			kling_max_databases = 16;
int			kling_poll_interval_ms = 10000;
int			kling_max_in_flight = 20;
int			kling_request_timeout_ms = 30000;
int			kling_task_timeout_ms = 3600 * 1000;
int			kling_max_attempts = 5;
char	   *kling_ca_file = NULL;
int			kling_max_active_tasks = 100;
int			kling_max_daily_tasks = 1000;
int			kling_retention_s = 0;
int			kling_delivery_timeout_ms = 5000;
char	   *kling_time_zone = NULL;
char	   *kling_proxy = NULL;
char	   *kling_fault_injection = NULL;

static const struct config_enum_entry kling_route_options[] = {
	{"generation", KLING_ROUTE_GENERATION, false},
	{"unified", KLING_ROUTE_UNIFIED, false},
	{NULL, 0, false}
};

static bool kling_check_base_url(char **newval, void **extra, GucSource source);
static bool kling_check_time_zone(char **newval, void **extra, GucSource source);
static bool kling_check_databases(char **newval, void **extra, GucSource source);
static const char *kling_show_api_key(void);


/*
 * Accept only http and https URLs, so that the API key can never be handed
 * to some other kind of transfer.
 */
static bool
kling_check_base_url(char **newval, void **extra, GucSource source)
{
	if (pg_strncasecmp(*newval, "https://", 8) != 0 &&
		pg_strncasecmp(*newval, "http://", 7) != 0)
	{
		GUC_check_errdetail("The base URL must start with \"https://\" or \"http://\".");
		return false;
	}
	return true;
}

/*
 * A time zone for the daily spend limit: empty (the server's log_timezone)
 * or a name PostgreSQL knows, such as "UTC", "Europe/Paris" or a POSIX
 * string like "UTC+5".
 */
static bool
kling_check_time_zone(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0' || pg_tzset(*newval) != NULL)
		return true;
	GUC_check_errdetail("Time zone \"%s\" is not recognized.", *newval);
	return false;
}

/* A list of database names, as identifiers ("Sales", plain_name). */
static bool
kling_check_databases(char **newval, void **extra, GucSource source)
{
	char	   *copy = pstrdup(*newval);
	List	   *names;
	bool		ok = SplitIdentifierString(copy, ',', &names);

	if (!ok)
		GUC_check_errdetail("List syntax is invalid.");
	list_free(names);
	pfree(copy);
	return ok;
}

/*
 * The key is never shown, to anyone: SHOW, current_setting() and
 * pg_settings only tell whether one is set.
 */
static const char *
kling_show_api_key(void)
{
	return (kling_api_key != NULL && kling_api_key[0] != '\0') ? "(set)" : "";
}

/*
 * Whether the launcher may serve a database of this name: one listed in
 * kling.databases, else the one kling.database_name names, else any.
 */
bool
kling_database_allowed(const char *name)
{
	char	   *copy;
	List	   *names;
	ListCell   *lc;
	bool		allowed = false;

	if (kling_databases == NULL || kling_databases[0] == '\0')
		return kling_database_name == NULL || kling_database_name[0] == '\0' ||
			strcmp(name, kling_database_name) == 0;

	copy = pstrdup(kling_databases);
	if (!SplitIdentifierString(copy, ',', &names))
		return false;			/* the check hook refused such a value */
	foreach(lc, names)
		if (strcmp(name, (char *) lfirst(lc)) == 0)
			allowed = true;
	list_free(names);
	pfree(copy);
	return allowed;
}

/*
 * The key requests use: the setting if set, else the AIMLAPI_API_KEY
 * environment variable of the server (which no SQL can read).  Empty if
 * neither is set.
 */
const char *
kling_effective_api_key(void)
{
	const char *env;

	if (kling_api_key != NULL && kling_api_key[0] != '\0')
		return kling_api_key;
	env = getenv("AIMLAPI_API_KEY");
	return env != NULL ? env : "";
}

/*
 * Define every kling.* setting.  Everything that steers where requests go or
 * how they authenticate is PGC_SIGHUP: only the server's configuration (a
 * superuser's) can set it, never a session.
 */
void
kling_define_settings(void)
{
	DefineCustomStringVariable("kling.api_key",
							   "Bearer key for the AI/ML API.",
							   NULL,
							   &kling_api_key,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, kling_show_api_key);

	DefineCustomStringVariable("kling.base_url",
							   "Base URL of the AI/ML API.",
							   NULL,
							   &kling_base_url,
							   "https://api.aimlapi.com",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   kling_check_base_url, NULL, NULL);

	DefineCustomEnumVariable("kling.api_route",
							 "Which provider routes to use: \"generation\" or \"unified\".",
							 NULL,
							 &kling_api_route,
							 KLING_ROUTE_GENERATION,
							 kling_route_options,
							 PGC_SIGHUP,
							 GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("kling.databases",
							   "Databases the kling workers may serve (comma-separated); empty: every database with the extension.",
							   NULL,
							   &kling_databases,
							   "",
							   PGC_SIGHUP,
							   GUC_LIST_INPUT,
							   kling_check_databases, NULL, NULL);

	/* Before 0.4 one database was served; a configuration naming it still works. */
	DefineCustomStringVariable("kling.database_name",
							   "Deprecated: the one database to serve, when kling.databases is empty.",
							   NULL,
							   &kling_database_name,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_databases",
							"Databases served at once, each by a worker of its own.",
							NULL,
							&kling_max_databases,
							16, 1, 1024,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.poll_interval",
							"Time between two polls of one task.",
							NULL,
							&kling_poll_interval_ms,
							10000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_in_flight",
							"Tasks the provider may hold at once for this account.",
							NULL,
							&kling_max_in_flight,
							20, 1, 1000000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.request_timeout",
							"Time limit of one HTTP request to the provider.",
							NULL,
							&kling_request_timeout_ms,
							30000, 100, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.task_timeout",
							"A task the provider has not finished this long after it was sent fails.",
							NULL,
							&kling_task_timeout_ms,
							3600 * 1000, 1000, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_attempts",
							"Transient failures in a row tolerated per request before a task fails.",
							NULL,
							&kling_max_attempts,
							5, 1, 1000,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomStringVariable("kling.ca_file",
							   "File of CA certificates to verify the provider with; empty for the system's.",
							   NULL,
							   &kling_ca_file,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_active_tasks",
							"Tasks one role may have that are not final; 0 for no limit.",
							NULL,
							&kling_max_active_tasks,
							100, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_daily_tasks",
							"Tasks one role may submit per day (server time zone); 0 for no limit.",
							NULL,
							&kling_max_daily_tasks,
							1000, 0, INT_MAX,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.retention",
							"Final tasks older than this are deleted by the worker; 0 keeps them forever.",
							NULL,
							&kling_retention_s,
							0, 0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("kling.delivery_timeout",
							"Time limit of one write-back or callback run for a task's owner.",
							NULL,
							&kling_delivery_timeout_ms,
							5000, 10, 3600 * 1000,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("kling.time_zone",
							   "Time zone whose day kling.max_daily_tasks counts; empty for the server's log_timezone.",
							   NULL,
							   &kling_time_zone,
							   "",
							   PGC_SIGHUP,
							   0,
							   kling_check_time_zone, NULL, NULL);

	DefineCustomStringVariable("kling.proxy",
							   "Proxy for requests to the provider; empty for none (the server's environment is ignored).",
							   NULL,
							   &kling_proxy,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("kling.fault_injection",
							   "For tests only: comma-separated points where the worker or the delivery process fails on purpose.",
							   "request_start: a request cannot start; round_end: a worker round fails before it commits; delivery_end: a delivery batch fails before it commits.",
							   &kling_fault_injection,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	kling_define_video_settings();
	MarkGUCPrefixReserved("kling");
}

/*
 * Whether the fault at this point is injected (kling.fault_injection lists
 * it).  Only the server's configuration can set it, never a session.
 */
bool
kling_fault(const char *point)
{
	const char *p = kling_fault_injection;
	size_t		len = strlen(point);

	while (p != NULL && (p = strstr(p, point)) != NULL)
	{
		bool		starts = (p == kling_fault_injection || p[-1] == ',' || p[-1] == ' ');
		bool		ends = (p[len] == '\0' || p[len] == ',' || p[len] == ' ');

		if (starts && ends)
			return true;
		p += len;
	}
	return false;
}

/*
 * Why a kling.* setting in the configuration files could not be applied,
 * as a hold reason in the given context, or NULL if all could.  The server
 * logs such a value once and keeps the old one (or the default); this
 * makes the worker hold instead of sending with it.
 */
char *
kling_settings_file_error(MemoryContext context)
{
	char	   *error = NULL;

	if (SPI_execute("SELECT name, sourcefile, sourceline, error"
					" FROM pg_catalog.pg_show_all_file_settings()"
					" WHERE name OPERATOR(pg_catalog.~~) 'kling.%' AND error IS NOT NULL"
					" ORDER BY seqno DESC LIMIT 1", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_file_settings");
	if (SPI_processed > 0)
	{
		TupleDesc	desc = SPI_tuptable->tupdesc;
		HeapTuple	tuple = SPI_tuptable->vals[0];

		error = MemoryContextStrdup(context,
									psprintf("%s is not valid: %s line %s (%s); nothing is sent until it is fixed and the configuration reloaded",
											 SPI_getvalue(tuple, desc, 1),
											 SPI_getvalue(tuple, desc, 2),
											 SPI_getvalue(tuple, desc, 3),
											 SPI_getvalue(tuple, desc, 4)));
	}
	return error;
}
