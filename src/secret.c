/*-------------------------------------------------------------------------
 *
 * secret.c
 *		Keeps the API key and the S3 keys out of the server log.
 *
 * PostgreSQL logs "parameter ... changed to ..." with the new value when a
 * reload changes a setting, and may log statements that set it.  A log
 * hook, installed in every process that loads the library, redacts such
 * messages before they are written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "tcop/tcopprot.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "secret.h"
#include "settings.h"
#include "video_settings.h"

#define KLING_REDACTED "[message redacted: it held the value of kling.api_key or a kling.s3_* key]"

static emit_log_hook_type prev_emit_log_hook = NULL;

static bool kling_holds_key(const char *text);
static bool kling_names_key_setting(const char *statement);
static void kling_redact_log(ErrorData *edata);

/* Install the log hook; called from _PG_init. */
void
kling_secret_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = kling_redact_log;
}

/* Whether a piece of a message holds a secret: the key in use, the settings'. */
static bool
kling_holds_key(const char *text)
{
	const char *key = kling_effective_api_key();

	if (text == NULL)
		return false;
	if (key[0] != '\0' && strstr(text, key) != NULL)
		return true;
	if (kling_s3_secret_key != NULL && kling_s3_secret_key[0] != '\0' &&
		strstr(text, kling_s3_secret_key) != NULL)
		return true;
	if (kling_s3_access_key != NULL && kling_s3_access_key[0] != '\0' &&
		strstr(text, kling_s3_access_key) != NULL)
		return true;
	return kling_api_key != NULL && kling_api_key[0] != '\0' &&
		strstr(text, kling_api_key) != NULL;
}

/*
 * Whether a statement may name the key's setting, in any spelling
 * PostgreSQL accepts: any case, quoted, with white space or comments
 * around the dot ("kling" . "API_KEY"), or as a Unicode-escaped
 * identifier (U&"..."), which is not decoded here but taken as a match.
 * The statement is compared with quotes, white space and comments taken
 * out, in lower case.
 */
static bool
kling_names_key_setting(const char *statement)
{
	char	   *folded;
	int			n = 0;
	bool		found;

	if (statement == NULL)
		return false;
	folded = palloc(strlen(statement) + 1);
	for (const char *p = statement; *p; p++)
	{
		if (p[0] == '/' && p[1] == '*')
		{
			const char *end = strstr(p + 2, "*/");

			if (end == NULL)
				break;
			p = end + 1;
		}
		else if (p[0] == '-' && p[1] == '-')
		{
			while (p[1] != '\0' && p[1] != '\n')
				p++;
		}
		else if (*p != '"' && !isspace((unsigned char) *p))
			folded[n++] = pg_ascii_tolower((unsigned char) *p);
	}
	folded[n] = '\0';
	found = strstr(folded, "api_key") != NULL || strstr(folded, "s3_secret_key") != NULL ||
		strstr(folded, "s3_access_key") != NULL ||
		(strstr(folded, "u&") != NULL && strstr(folded, "kling") != NULL);
	pfree(folded);
	return found;
}

/*
 * Redact a message that holds the key (as the reload message does), or
 * that quotes a statement setting it (statement logging); and keep such a
 * statement out of STATEMENT lines.  Other messages that merely name the
 * setting pass unchanged.
 */
static void
kling_redact_log(ErrorData *edata)
{
	bool		statement_sets_key = kling_names_key_setting(debug_query_string);

	if (kling_holds_key(edata->message) ||
		kling_holds_key(edata->detail) ||
		kling_holds_key(edata->detail_log) ||
		kling_holds_key(edata->hint) ||
		kling_holds_key(edata->context) ||
		kling_holds_key(edata->internalquery) ||
		(statement_sets_key && edata->message != NULL &&
		 strstr(edata->message, debug_query_string) != NULL))
	{
		edata->message = MemoryContextStrdup(ErrorContext, KLING_REDACTED);
		edata->detail = NULL;
		edata->detail_log = NULL;
		edata->hint = NULL;
		edata->context = NULL;
		edata->internalquery = NULL;
	}
	if (statement_sets_key || kling_holds_key(debug_query_string))
		edata->hide_stmt = true;

	if (prev_emit_log_hook)
		prev_emit_log_hook(edata);
}
