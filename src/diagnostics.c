/*-------------------------------------------------------------------------
 *
 * diagnostics.c
 *		What the worker makes of a provider's answer, asked from SQL:
 *		kling_parse_response (the protocol, part of the extension's API, for
 *		troubleshooting) and kling_policy_decide (the policy, which only the
 *		regression tests declare).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "policy.h"
#include "protocol.h"
#include "settings.h"
#include "subxact.h"

PG_FUNCTION_INFO_V1(kling_parse_response);
PG_FUNCTION_INFO_V1(kling_policy_decide);

/* A body to parse, and the result. */
typedef struct KlingParseOne
{
	text	   *body;
	Jsonb	   *parsed;
} KlingParseOne;

/* Parse step for kling_try_in_subtransaction. */
static void
kling_parse_one(void *arg)
{
	KlingParseOne *p = arg;

	p->parsed = kling_parse_body(VARDATA_ANY(p->body), VARSIZE_ANY_EXHDR(p->body));
}

/* Read one response as the worker does, its body parsed in a subtransaction. */
static void
kling_read_one(KlingRequestKind kind, long http_status, text *body,
			   const char *retry_after, KlingResponse *r)
{
	KlingParseOne p = {body, NULL};
	char	   *failure = NULL;

	if (body == NULL || VARSIZE_ANY_EXHDR(body) == 0)
		failure = "empty response body";
	else if ((failure = kling_try_in_subtransaction(kling_parse_one, &p)) != NULL)
		failure = psprintf("malformed response body: %s", failure);
	kling_read_response(kind, http_status, p.parsed, failure, retry_after, r);
}

/* "create" or "poll". */
static KlingRequestKind
kling_request_kind(const char *kind)
{
	if (strcmp(kind, "create") == 0)
		return KLING_REQUEST_CREATE;
	if (strcmp(kind, "poll") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid response kind \"%s\"", kind),
				 errhint("Use \"create\" or \"poll\".")));
	return KLING_REQUEST_POLL;
}

/* Append "key": value (a JSON string, or null) to a JSON object. */
static void
kling_append_field(StringInfo buf, const char *key, const char *value)
{
	appendStringInfoString(buf, buf->len > 1 ? ", " : "");
	escape_json(buf, key);
	appendStringInfoString(buf, ": ");
	if (value != NULL)
		escape_json(buf, value);
	else
		appendStringInfoString(buf, "null");
}

/*
 * kling_parse_response(kind text, http_status integer, body text,
 *						retry_after text DEFAULT NULL) RETURNS jsonb
 *
 * What the worker makes of a provider response: for troubleshooting a
 * provider's answer, and for testing the protocol module directly.
 */
Datum
kling_parse_response(PG_FUNCTION_ARGS)
{
	KlingRequestKind request_kind;
	text	   *body;
	KlingResponse r;
	StringInfoData buf;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("kind and http_status must not be null")));

	request_kind = kling_request_kind(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	body = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	kling_read_one(request_kind, PG_GETARG_INT32(1), body,
				   PG_ARGISNULL(3) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(3)), &r);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	kling_append_field(&buf, "outcome", kling_outcome_name(r.outcome));
	kling_append_field(&buf, "state", r.state);
	kling_append_field(&buf, "provider_status", r.provider_status);
	kling_append_field(&buf, "generation_id", r.generation_id);
	kling_append_field(&buf, "video_url", r.video_url);
	kling_append_field(&buf, "message", r.message);
	appendStringInfo(&buf, ", \"counts_attempt\": %s, \"retry_after_ms\": %d}",
					 r.counts_attempt ? "true" : "false", r.retry_after_ms);

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * kling_policy_decide(kind text, http_status integer, body text,
 *					   attempts integer, generating boolean, learned boolean,
 *					   retry_after text, hold_ms integer) RETURNS jsonb
 *
 * What the worker decides for a task from one response: the row update,
 * whether it is written at all, and the effects on the worker.  The
 * jitter of retries is fixed at its middle (a backoff of exactly the
 * doubling); kling.poll_interval and kling.max_attempts are the server's.
 * Not part of the extension's SQL: the regression tests declare it.
 */
Datum
kling_policy_decide(PG_FUNCTION_ARGS)
{
	KlingSent	sent = {0};
	KlingPolicyParams p;
	KlingResponse r;
	KlingDecision d;
	KlingTaskUpdate *u = &d.update;
	StringInfoData buf;

	for (int i = 0; i < 8; i++)
		if (PG_ARGISNULL(i) && i != 2 && i != 6)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("only body and retry_after may be null")));

	sent.task_id = 1;
	sent.kind = kling_request_kind(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	sent.attempts = PG_GETARG_INT32(3);
	sent.generating = PG_GETARG_BOOL(4);
	sent.learned = PG_GETARG_BOOL(5);
	p.poll_interval_ms = kling_poll_interval_ms;
	p.max_attempts = kling_max_attempts;
	p.hold_ms = PG_GETARG_INT32(7);
	p.jitter = 0.5;

	kling_read_one(sent.kind, PG_GETARG_INT32(1), PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2),
				   PG_ARGISNULL(6) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(6)), &r);
	kling_decide(&sent, PG_GETARG_INT32(1), &r, &p, &d);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	kling_append_field(&buf, "status", u->status);
	kling_append_field(&buf, "generation_id", u->generation_id);
	kling_append_field(&buf, "video_url", u->video_url);
	kling_append_field(&buf, "error", u->error);
	appendStringInfo(&buf, ", \"attempts\": %d, \"next_attempt_ms\": %d, \"write\": %s",
					 u->attempts, u->next_attempt_ms, d.write ? "true" : "false");
	appendStringInfo(&buf, ", \"effects\": {\"request_failed\": %s, \"rate_limited\": %s, \"retried\": %s, \"account_works\": %s",
					 d.effects.request_failed ? "true" : "false",
					 d.effects.rate_limited ? "true" : "false",
					 d.effects.retried ? "true" : "false",
					 d.effects.account_works ? "true" : "false");
	kling_append_field(&buf, "hold", d.effects.hold);
	appendStringInfoString(&buf, "}}");

	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}
