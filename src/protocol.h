/*-------------------------------------------------------------------------
 *
 * protocol.h
 *		The provider's wire protocol: URLs, request bodies, and what a
 *		response means for the task.  No SPI, no curl.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_PROTOCOL_H
#define KLING_PROTOCOL_H

#include "utils/jsonb.h"

typedef enum KlingRequestKind
{
	KLING_REQUEST_CREATE,
	KLING_REQUEST_POLL
} KlingRequestKind;

/* What a response means for the task. */
typedef enum KlingOutcome
{
	KLING_OUTCOME_ACCEPTED,		/* create: the provider holds the task */
	KLING_OUTCOME_PENDING,		/* poll: still queued or generating */
	KLING_OUTCOME_COMPLETED,	/* poll: the video is ready */
	KLING_OUTCOME_FAILED,		/* the task fails now */
	KLING_OUTCOME_RETRY,		/* transient: send this request again later */
	KLING_OUTCOME_HOLD			/* the account is refused: hold all work */
} KlingOutcome;

typedef struct KlingResponse
{
	KlingOutcome outcome;
	const char *state;			/* for ACCEPTED and PENDING: "queued" or
								 * "generating" */
	char	   *provider_status;	/* the provider's own status word */
	char	   *generation_id;
	char	   *video_url;
	char	   *message;		/* readable reason for FAILED, RETRY, HOLD */
	Jsonb	   *result;			/* the whole response, when it was JSON */
	bool		counts_attempt; /* RETRY: counts against kling.max_attempts */
	int			retry_after_ms; /* RETRY: the provider's wish, or -1 */
} KlingResponse;

extern char *kling_create_url(const char *base_url, int route);
extern char *kling_poll_url(const char *base_url, int route,
							const char *generation_id);
extern char *kling_create_body(const char *prompt, Jsonb *opts);
extern Jsonb *kling_parse_body(const char *body, size_t len);
extern void kling_read_response(KlingRequestKind kind, long http_status,
								Jsonb *jb, const char *unreadable,
								const char *retry_after, KlingResponse *out);
extern void kling_read_transport_failure(KlingRequestKind kind,
										 bool started, bool request_sent,
										 const char *reason,
										 KlingResponse *out);
extern const char *kling_outcome_name(KlingOutcome outcome);

#endif							/* KLING_PROTOCOL_H */
