/*-------------------------------------------------------------------------
 *
 * secret.c
 *		Keeps the API key out of the server log.
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

#include "kling.h"
#include "secret.h"

#define KLING_KEY_SETTING "kling.api_key"
#define KLING_REDACTED "[message redacted: it held the kling.api_key value]"

static emit_log_hook_type prev_emit_log_hook = NULL;

static bool kling_holds_key(const char *text);
static void kling_redact_log(ErrorData *edata);

/* Install the log hook; called from _PG_init. */
void
kling_secret_init(void)
{
	prev_emit_log_hook = emit_log_hook;
	emit_log_hook = kling_redact_log;
}

/* Whether a piece of a message holds the key in use or the setting's. */
static bool
kling_holds_key(const char *text)
{
	const char *key = kling_effective_api_key();

	if (text == NULL)
		return false;
	if (key[0] != '\0' && strstr(text, key) != NULL)
		return true;
	return kling_api_key != NULL && kling_api_key[0] != '\0' &&
		strstr(text, kling_api_key) != NULL;
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
	bool		statement_sets_key = debug_query_string != NULL &&
		strstr(debug_query_string, KLING_KEY_SETTING) != NULL;

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
