/*-------------------------------------------------------------------------
 *
 * video_settings.c
 *		The settings of kept videos.
 *
 * Where files go and what may be fetched are the server's choice: only the
 * configuration (a superuser's) sets them.  Whether a task's video is kept
 * is the user's: kling.keep_videos is the default of opts.keep.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "utils/guc.h"

#include "video_settings.h"

bool		kling_keep_videos = false;
int			kling_storage = KLING_STORAGE_DATABASE;
int			kling_max_video_size_kb = 200 * 1024;
bool		kling_download_allow_private = false;
char	   *kling_s3_endpoint = NULL;
char	   *kling_s3_bucket = NULL;
char	   *kling_s3_region = NULL;
char	   *kling_s3_access_key = NULL;
char	   *kling_s3_secret_key = NULL;

static const struct config_enum_entry kling_storage_options[] = {
	{"database", KLING_STORAGE_DATABASE, false},
	{"s3", KLING_STORAGE_S3, false},
	{NULL, 0, false}
};

/* The endpoint gets signed requests: http(s) only, as kling.base_url. */
static bool
kling_check_s3_endpoint(char **newval, void **extra, GucSource source)
{
	if ((*newval)[0] == '\0' ||
		pg_strncasecmp(*newval, "https://", 8) == 0 ||
		pg_strncasecmp(*newval, "http://", 7) == 0)
		return true;
	GUC_check_errdetail("kling.s3_endpoint must be an http or https URL.");
	return false;
}

/* The credentials are never shown, not even to superusers. */
static const char *
kling_show_s3_secret(void)
{
	return (kling_s3_secret_key != NULL && kling_s3_secret_key[0] != '\0') ? "(set)" : "";
}

static const char *
kling_show_s3_access_key(void)
{
	return (kling_s3_access_key != NULL && kling_s3_access_key[0] != '\0') ? "(set)" : "";
}

/* The largest file kept, in bytes. */
int64
kling_max_video_bytes(void)
{
	return (int64) kling_max_video_size_kb * 1024;
}

void
kling_define_video_settings(void)
{
	DefineCustomBoolVariable("kling.keep_videos",
							 "Keep a copy of each completed video unless the task's opts.keep says otherwise.",
							 NULL,
							 &kling_keep_videos,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);

	DefineCustomEnumVariable("kling.storage",
							 "Where kept videos go: \"database\" (large objects) or \"s3\".",
							 NULL,
							 &kling_storage,
							 KLING_STORAGE_DATABASE,
							 kling_storage_options,
							 PGC_SIGHUP,
							 GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	DefineCustomIntVariable("kling.max_video_size",
							"Larger videos are not kept; the task says why.",
							NULL,
							&kling_max_video_size_kb,
							200 * 1024, 1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_KB,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("kling.download_allow_private",
							 "Let downloads reach loopback and private addresses, over http too.",
							 "Off: videos are fetched only over https from public addresses, so that a provider's answer cannot point the worker at internal services.",
							 &kling_download_allow_private,
							 false,
							 PGC_SIGHUP,
							 GUC_SUPERUSER_ONLY,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("kling.s3_endpoint",
							   "URL of the S3-compatible service kept videos are uploaded to (kling.storage = s3).",
							   NULL,
							   &kling_s3_endpoint,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   kling_check_s3_endpoint, NULL, NULL);

	DefineCustomStringVariable("kling.s3_bucket",
							   "Bucket kept videos are uploaded to.",
							   NULL,
							   &kling_s3_bucket,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("kling.s3_region",
							   "Region the uploads are signed for.",
							   NULL,
							   &kling_s3_region,
							   "us-east-1",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("kling.s3_access_key",
							   "Access key id of the uploads.",
							   NULL,
							   &kling_s3_access_key,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, kling_show_s3_access_key);

	DefineCustomStringVariable("kling.s3_secret_key",
							   "Secret key of the uploads; never shown.",
							   NULL,
							   &kling_s3_secret_key,
							   "",
							   PGC_SIGHUP,
							   GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, kling_show_s3_secret);
}
