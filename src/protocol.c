/*-------------------------------------------------------------------------
 *
 * protocol.c
 *		The provider's wire protocol: URLs, create bodies, and the reading
 *		of responses into a KlingResponse.
 *
 * Everything here is pure: bytes in, a struct out.  Responses are
 * untrusted: a body that is not valid JSON, not UTF-8, too deep or of an
 * unexpected shape becomes an outcome with a reason, never an error that
 * escapes to the caller.  The whole response is kept as the task's result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "options.h"
#include "protocol.h"
#include "settings.h"

/* Provider text longer than this is cut in error messages. */
#define KLING_MAX_MESSAGE_CHARS 500

static const char *kling_route_path(int route);
static char *kling_url_encode(const char *s);
static char *kling_get_string(Jsonb *jb, const char *key);
static char *kling_get_id(Jsonb *jb);
static char *kling_value_message(const JsonbValue *v);
static char *kling_error_message(Jsonb *jb, const char *key);
static char *kling_clean_text(const char *s);
static int	kling_parse_retry_after(const char *value);
static void kling_read_success(KlingRequestKind kind, Jsonb *jb,
							   KlingResponse *out);
static void kling_read_http_error(KlingRequestKind kind, long http_status,
								  Jsonb *jb, KlingResponse *out);

/* The path of the create and poll routes. */
static const char *
kling_route_path(int route)
{
	return route == KLING_ROUTE_UNIFIED
		? "/v2/video/generations"
		: "/v2/generate/video/kling/generation";
}

/* The create URL: base URL without trailing slashes, then the route. */
char *
kling_create_url(const char *base_url, int route)
{
	int			len = strlen(base_url);

	while (len > 0 && base_url[len - 1] == '/')
		len--;
	return psprintf("%.*s%s", len, base_url, kling_route_path(route));
}

/* The poll URL of one generation; the id is opaque and percent-encoded. */
char *
kling_poll_url(const char *base_url, int route, const char *generation_id)
{
	return psprintf("%s?generation_id=%s",
					kling_create_url(base_url, route),
					kling_url_encode(generation_id));
}

/* Percent-encode everything but RFC 3986's unreserved characters. */
static char *
kling_url_encode(const char *s)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~')
			appendStringInfoChar(&buf, (char) *p);
		else
			appendStringInfo(&buf, "%%%02X", *p);
	}
	return buf.data;
}

/*
 * The create body: model and prompt (left out when blank: only models that
 * need none accept one), then every option the provider knows, with its
 * JSON type.  The body is sent as UTF-8 whatever the database encoding.
 */
char *
kling_create_body(const char *prompt, Jsonb *opts)
{
	StringInfoData buf;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *model = kling_get_string(opts, "model");

	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"model\": ");
	escape_json(&buf, model ? model : KLING_DEFAULT_MODEL);
	if (!kling_prompt_is_blank(prompt, strlen(prompt)))
	{
		appendStringInfoString(&buf, ", \"prompt\": ");
		escape_json(&buf, prompt);
	}

	it = JsonbIteratorInit(&opts->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *key;

		if (tok != WJB_KEY)
			continue;
		key = pnstrdup(v.val.string.val, v.val.string.len);
		tok = JsonbIteratorNext(&it, &v, true);
		if (strcmp(key, "model") == 0 || !kling_option_is_sent(key))
			continue;

		appendStringInfoString(&buf, ", ");
		escape_json(&buf, key);
		appendStringInfoString(&buf, ": ");
		if (v.type == jbvString)
			escape_json(&buf, pnstrdup(v.val.string.val, v.val.string.len));
		else if (v.type == jbvNumeric)
			appendStringInfoString(&buf,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v.val.numeric))));
		else if (v.type == jbvBool)
			appendStringInfoString(&buf, v.val.boolean ? "true" : "false");
		else
			(void) JsonbToCString(&buf, v.val.binary.data, v.val.binary.len);
	}
	appendStringInfoChar(&buf, '}');

	return pg_server_to_any(buf.data, buf.len, PG_UTF8);
}

/*
 * Parse an untrusted response body into jsonb: to the server encoding, then
 * to jsonb.  Invalid UTF-8, bad JSON, nesting too deep or numbers out of
 * range raise errors; the caller catches them (responses.c).
 */
Jsonb *
kling_parse_body(const char *body, size_t len)
{
	char	   *copy = palloc(len + 1);
	char	   *text;

	/* Keep any NUL bytes: the encoding check rejects them. */
	memcpy(copy, body, len);
	copy[len] = '\0';
	text = pg_any_to_server(copy, len, PG_UTF8);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(text)));
}

/* A top-level string member of an object, or NULL. */
static char *
kling_get_string(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL ||
		v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * The generation id, under "id" or "generation_id"; numeric ids (seen as
 * 18-digit numbers) are kept as their text.
 */
static char *
kling_get_id(Jsonb *jb)
{
	static const char *const keys[] = {"id", "generation_id"};

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	for (int i = 0; i < (int) lengthof(keys); i++)
	{
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(&jb->root, keys[i], strlen(keys[i]), &v) == NULL)
			continue;
		if (v.type == jbvString && v.val.string.len > 0)
			return pnstrdup(v.val.string.val, v.val.string.len);
		if (v.type == jbvNumeric)
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v.val.numeric)));
	}
	return NULL;
}

/*
 * A readable message from an error value of any shape: a string,
 * {name, message}, {detail: [{msg}, ...]}, {detail: "..."}, or anything
 * else (shown as JSON).
 */
static char *
kling_value_message(const JsonbValue *v)
{
	JsonbValue	m;
	JsonbValue	n;
	JsonbContainer *c;

	if (v->type == jbvString)
		return kling_clean_text(pnstrdup(v->val.string.val, v->val.string.len));
	if (v->type != jbvBinary)
		return NULL;

	c = v->val.binary.data;
	if (JsonContainerIsObject(c))
	{
		if (getKeyJsonValueFromContainer(c, "message", 7, &m) && m.type == jbvString)
		{
			char	   *msg = pnstrdup(m.val.string.val, m.val.string.len);

			if (getKeyJsonValueFromContainer(c, "name", 4, &n) && n.type == jbvString)
				msg = psprintf("%.*s: %s", n.val.string.len, n.val.string.val, msg);
			return kling_clean_text(msg);
		}
		if (getKeyJsonValueFromContainer(c, "detail", 6, &m))
		{
			char	   *msg = kling_value_message(&m);

			if (msg != NULL)
				return msg;
		}
	}
	else if (JsonContainerIsArray(c))
	{
		StringInfoData buf;
		JsonbValue *elem;
		int			count = JsonContainerSize(c);

		initStringInfo(&buf);
		for (int i = 0; i < count; i++)
		{
			char	   *msg = NULL;

			elem = getIthJsonbValueFromContainer(c, i);
			if (elem->type == jbvBinary && JsonContainerIsObject(elem->val.binary.data) &&
				getKeyJsonValueFromContainer(elem->val.binary.data, "msg", 3, &m) &&
				m.type == jbvString)
				msg = pnstrdup(m.val.string.val, m.val.string.len);
			else
				msg = kling_value_message(elem);
			if (msg != NULL)
				appendStringInfo(&buf, "%s%s", buf.len > 0 ? "; " : "", msg);
		}
		if (buf.len > 0)
			return kling_clean_text(buf.data);
	}
	return kling_clean_text(JsonbToCString(NULL, c, v->val.binary.len));
}

/* The readable message of a top-level member, or NULL. */
static char *
kling_error_message(Jsonb *jb, const char *key)
{
	JsonbValue	v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	if (getKeyJsonValueFromContainer(&jb->root, key, strlen(key), &v) == NULL)
		return NULL;
	return kling_value_message(&v);
}

/* Untrusted text made safe to show: no control characters, bounded length. */
static char *
kling_clean_text(const char *s)
{
	char	   *out = pstrdup(s);
	int			len;

	for (char *p = out; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			*p = ' ';
	len = strlen(out);
	if (pg_mbstrlen_with_len(out, len) > KLING_MAX_MESSAGE_CHARS)
		out = psprintf("%.*s...", pg_mbcharcliplen(out, len, KLING_MAX_MESSAGE_CHARS), out);
	return out;
}

/*
 * Retry-After as milliseconds from now: either delay-seconds or an
 * IMF-fixdate HTTP date.  -1 when absent or unreadable.
 */
static int
kling_parse_retry_after(const char *value)
{
	struct tm	tm;
	char	   *end;
	long		seconds;

	if (value == NULL)
		return -1;
	while (isspace((unsigned char) *value))
		value++;
	if (*value == '\0')
		return -1;

	seconds = strtol(value, &end, 10);
	if (end != value && (*end == '\0' || isspace((unsigned char) *end)))
		return seconds < 0 ? 0 : (int) Min(seconds, 86400L) * 1000;

	memset(&tm, 0, sizeof(tm));
	end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	if (end != NULL)
	{
		double		diff = difftime(timegm(&tm), time(NULL));

		return diff <= 0 ? 0 : (int) Min(diff, 86400.0) * 1000;
	}
	return -1;
}

/*
 * Read a 2xx response: a create gives the generation id, a poll the task's
 * progress.
 */
static void
kling_read_success(KlingRequestKind kind, Jsonb *jb, KlingResponse *out)
{
	char	   *status = kling_get_string(jb, "status");

	out->provider_status = status;
	if (kind == KLING_REQUEST_CREATE)
	{
		out->generation_id = kling_get_id(jb);
		if (out->generation_id == NULL)
		{
			/* It may exist and bill: never send it again. */
			out->outcome = KLING_OUTCOME_FAILED;
			out->message = pstrdup("the provider accepted the request but returned no generation id");
			return;
		}
		out->outcome = KLING_OUTCOME_ACCEPTED;
		out->state = (status && strcmp(status, "generating") == 0) ? "generating" : "queued";
		return;
	}

	if (status == NULL)
	{
		out->outcome = KLING_OUTCOME_RETRY;
		out->counts_attempt = true;
		out->message = pstrdup("the provider's response has no status");
	}
	else if (strcmp(status, "completed") == 0)
	{
		JsonbValue	video;
		JsonbValue	url;

		if (getKeyJsonValueFromContainer(&jb->root, "video", 5, &video) &&
			video.type == jbvBinary && JsonContainerIsObject(video.val.binary.data) &&
			getKeyJsonValueFromContainer(video.val.binary.data, "url", 3, &url) &&
			url.type == jbvString && url.val.string.len > 0)
		{
			out->outcome = KLING_OUTCOME_COMPLETED;
			out->video_url = pnstrdup(url.val.string.val, url.val.string.len);
		}
		else
		{
			out->outcome = KLING_OUTCOME_FAILED;
			out->message = pstrdup("the provider reported the task completed but gave no video URL");
		}
	}
	else if (strcmp(status, "error") == 0 || strcmp(status, "failed") == 0)
	{
		char	   *msg = kling_error_message(jb, "error");

		out->outcome = KLING_OUTCOME_FAILED;
		out->message = msg ? msg : pstrdup("the provider reported an error without details");
	}
	else
	{
		/* Unknown words are progress too: the raw word stays in result. */
		out->outcome = KLING_OUTCOME_PENDING;
		out->state = (strcmp(status, "queued") == 0 || strcmp(status, "waiting") == 0 ||
					  strcmp(status, "pending") == 0) ? "queued" : "generating";
	}
}

/*
 * Whether an error status proves that the provider refused a create before
 * doing any work, so that sending it again cannot bill twice: any 4xx (it
 * refused the request) and 503 (it did not take it).  A 500, 502, 504 or
 * anything else may come after the provider accepted the task.
 */
static bool
kling_create_refused(long http_status)
{
	return (http_status >= 300 && http_status < 500) || http_status == 503;
}

/*
 * Read an error status, following the provider's error table: 400 fails
 * the task, 401/403 hold the account's queue, 404 on a poll and 429/5xx are
 * retried; a create is retried only when its answer proves it was refused.
 */
static void
kling_read_http_error(KlingRequestKind kind, long http_status, Jsonb *jb,
					  KlingResponse *out)
{
	char	   *detail = kling_error_message(jb, "message");

	if (detail == NULL)
		detail = kling_error_message(jb, "detail");
	if (detail == NULL)
		detail = kling_error_message(jb, "error");
	if (detail == NULL)
		detail = pstrdup("no details");

	if (kind == KLING_REQUEST_CREATE && !kling_create_refused(http_status))
	{
		out->outcome = KLING_OUTCOME_FAILED;
		out->message = psprintf("outcome unknown: the provider answered HTTP %ld (%s) after the request was sent; the task may exist and bill, so it was not sent again",
								http_status, detail);
		return;
	}
	if (http_status >= 300 && http_status < 400)
	{
		/* Redirects are never followed: the base URL is wrong. */
		out->outcome = KLING_OUTCOME_HOLD;
		out->message = psprintf("the provider redirects (HTTP %ld): %s; check kling.base_url",
								http_status, detail);
		return;
	}

	switch (http_status)
	{
		case 400:
		case 422:
			out->outcome = KLING_OUTCOME_FAILED;
			out->message = psprintf("the provider rejected the request (HTTP %ld): %s",
									http_status, detail);
			break;
		case 401:
			out->outcome = KLING_OUTCOME_HOLD;
			out->message = psprintf("the provider refused the API key (HTTP 401): %s; check kling.api_key",
									detail);
			break;
		case 403:
			out->outcome = KLING_OUTCOME_HOLD;
			out->message = psprintf("the provider refused the account (HTTP 403): %s; check the account's credits",
									detail);
			break;
		case 404:
			if (kind == KLING_REQUEST_CREATE)
			{
				out->outcome = KLING_OUTCOME_HOLD;
				out->message = psprintf("the provider has no create route here (HTTP 404): %s; check kling.base_url and kling.api_route",
										detail);
			}
			else
			{
				out->outcome = KLING_OUTCOME_RETRY;
				out->counts_attempt = true;
				out->message = psprintf("the provider does not know this generation (HTTP 404): %s",
										detail);
			}
			break;
		case 429:
			out->outcome = KLING_OUTCOME_RETRY;
			out->counts_attempt = false;
			out->message = psprintf("the provider is rate limiting (HTTP 429): %s", detail);
			break;
		default:
			out->outcome = KLING_OUTCOME_RETRY;
			out->counts_attempt = true;
			out->message = psprintf("the provider answered HTTP %ld: %s", http_status, detail);
			break;
	}
}

/*
 * Read a complete HTTP response to a create or poll request: its body as
 * parsed by kling_parse_body, or NULL and why it could not be.
 */
void
kling_read_response(KlingRequestKind kind, long http_status, Jsonb *jb,
					const char *unreadable, const char *retry_after,
					KlingResponse *out)
{
	char	   *reason = unreadable ? pstrdup(unreadable) : NULL;

	memset(out, 0, sizeof(*out));
	out->retry_after_ms = kling_parse_retry_after(retry_after);

	if (jb != NULL && !JB_ROOT_IS_OBJECT(jb))
	{
		reason = pstrdup("response body is not a JSON object");
		jb = NULL;
	}
	out->result = jb;

	if (http_status < 200 || http_status >= 300)
	{
		kling_read_http_error(kind, http_status, jb, out);
		return;
	}

	if (jb == NULL)
	{
		if (kind == KLING_REQUEST_CREATE)
		{
			/* Accepted but unreadable: it may exist and bill, never resend. */
			out->outcome = KLING_OUTCOME_FAILED;
			out->message = psprintf("outcome unknown: the provider accepted the request but its response was unreadable (%s)",
									reason);
		}
		else
		{
			out->outcome = KLING_OUTCOME_RETRY;
			out->counts_attempt = true;
			out->message = reason;
		}
		return;
	}

	kling_read_success(kind, jb, out);
}

/*
 * A request that got no complete response.  One that could not even start
 * here (no libcurl handle, no memory) fails a create now, with the reason:
 * it was never sent, so kling_retry() may send it again; a poll is retried.
 * One that never left this machine (the name did not resolve, the
 * connection or TLS failed) is not the task's fault: the queue holds, as
 * for a refused key, and nothing fails.  A poll that was sent is retried.
 * A create that was sent may have been created (and billed) by the
 * provider, so it fails as unknown rather than risk paying twice.
 */
void
kling_read_transport_failure(KlingRequestKind kind, bool started, bool request_sent,
							 const char *reason, KlingResponse *out)
{
	memset(out, 0, sizeof(*out));
	out->retry_after_ms = -1;

	if (!started)
	{
		out->outcome = kind == KLING_REQUEST_CREATE ? KLING_OUTCOME_FAILED : KLING_OUTCOME_RETRY;
		out->counts_attempt = true;
		out->message = psprintf("could not start the request: %s; it was never sent", reason);
		return;
	}
	if (!request_sent)
	{
		out->outcome = KLING_OUTCOME_HOLD;
		out->message = psprintf("the provider cannot be reached: %s; check the network and kling.base_url",
								reason);
		return;
	}
	if (kind == KLING_REQUEST_CREATE)
	{
		out->outcome = KLING_OUTCOME_FAILED;
		out->message = psprintf("outcome unknown: the request was sent but no complete response came back (%s); not sent again to avoid paying twice",
								reason);
		return;
	}
	out->outcome = KLING_OUTCOME_RETRY;
	out->counts_attempt = true;
	out->message = psprintf("request failed: %s", reason);
}

/* The outcome's name, for logs and the diagnostic function. */
const char *
kling_outcome_name(KlingOutcome outcome)
{
	switch (outcome)
	{
		case KLING_OUTCOME_ACCEPTED:
			return "accepted";
		case KLING_OUTCOME_PENDING:
			return "pending";
		case KLING_OUTCOME_COMPLETED:
			return "completed";
		case KLING_OUTCOME_FAILED:
			return "failed";
		case KLING_OUTCOME_RETRY:
			return "retry";
		case KLING_OUTCOME_HOLD:
			return "hold";
	}
	return "unknown";
}
