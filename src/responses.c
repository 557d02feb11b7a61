/*-------------------------------------------------------------------------
 *
 * responses.c
 *		Reading the worker's finished requests into what they mean.
 *
 * A response body is untrusted: invalid UTF-8, bad JSON, nesting too deep
 * or numbers out of range make the parser raise an error.  All the bodies
 * of a round are parsed in one subtransaction; only if that fails is each
 * parsed in one of its own, to tell which is unreadable.  Runs inside the
 * round's transaction.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "responses.h"
#include "subxact.h"

/* The bodies to parse, and where their jsonb goes. */
typedef struct KlingBodies
{
	KlingHttpRequest **requests;
	int			n;
	Jsonb	  **parsed;
} KlingBodies;

static void kling_parse_all(void *arg);

/* Whether a finished request has a body to parse. */
static bool
kling_has_body(KlingHttpRequest *req)
{
	return kling_http_failure(req) == NULL && req->body != NULL && req->body_len > 0;
}

/* Parse step: every body with something in it. */
static void
kling_parse_all(void *arg)
{
	KlingBodies *b = arg;

	for (int i = 0; i < b->n; i++)
		if (kling_has_body(b->requests[i]))
			b->parsed[i] = kling_parse_body(b->requests[i]->body, b->requests[i]->body_len);
}

/*
 * Read n finished requests (their kinds given) into out[]: a response, or
 * why none came back.
 */
void
kling_read_responses(KlingHttpRequest **requests, const KlingRequestKind *kinds,
					 KlingResponse *out, int n)
{
	KlingBodies all = {requests, n, palloc0(Max(n, 1) * sizeof(Jsonb *))};
	char	  **unreadable = palloc0(Max(n, 1) * sizeof(char *));

	if (n > 0 && kling_try_in_subtransaction(kling_parse_all, &all) != NULL)
	{
		for (int i = 0; i < n; i++)
		{
			KlingBodies one = {&requests[i], 1, &all.parsed[i]};
			char	   *failure;

			all.parsed[i] = NULL;
			failure = kling_try_in_subtransaction(kling_parse_all, &one);
			if (failure != NULL)
				unreadable[i] = psprintf("malformed response body: %s", failure);
		}
	}

	for (int i = 0; i < n; i++)
	{
		KlingHttpRequest *req = requests[i];
		const char *failure = kling_http_failure(req);

		if (failure != NULL)
			kling_read_transport_failure(kinds[i], req->started, req->request_sent,
										 failure, &out[i]);
		else
			kling_read_response(kinds[i], req->http_status, all.parsed[i],
								kling_has_body(req) ? unreadable[i] : "empty response body",
								req->retry_after, &out[i]);
	}
}
