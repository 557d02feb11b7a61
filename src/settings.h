/*-------------------------------------------------------------------------
 *
 * settings.h
 *		The kling.* settings, shared by all its modules.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_SETTINGS_H
#define KLING_SETTINGS_H

/* Which pair of provider routes requests go to (kling.api_route). */
typedef enum KlingApiRoute
{
	KLING_ROUTE_GENERATION,		/* /v2/generate/video/kling/generation */
	KLING_ROUTE_UNIFIED			/* /v2/video/generations */
} KlingApiRoute;

extern char *kling_api_key;
extern char *kling_base_url;
extern int	kling_api_route;
extern char *kling_databases;
extern char *kling_database_name;
extern int	kling_max_databases;
extern int	kling_poll_interval_ms;
extern int	kling_max_in_flight;
extern int	kling_request_timeout_ms;
extern int	kling_task_timeout_ms;
extern int	kling_max_attempts;
extern char *kling_ca_file;
extern int	kling_max_active_tasks;
extern int	kling_max_daily_tasks;
extern int	kling_retention_s;
extern int	kling_delivery_timeout_ms;
extern char *kling_time_zone;
extern char *kling_proxy;
extern char *kling_fault_injection;

/* The key requests use: kling.api_key, else the server's AIMLAPI_API_KEY. */
extern const char *kling_effective_api_key(void);
extern bool kling_database_allowed(const char *name);

extern void kling_define_settings(void);
extern bool kling_fault(const char *point);
extern char *kling_settings_file_error(MemoryContext context);

#endif							/* KLING_SETTINGS_H */
