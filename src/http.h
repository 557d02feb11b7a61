/*-------------------------------------------------------------------------
 *
 * http.h
 *		The worker's HTTP client: one libcurl multi handle driven from the
 *		worker's wait loop.  No SPI.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_HTTP_H
#define KLING_HTTP_H

#include <curl/curl.h>

#include "lib/ilist.h"

#include "protocol.h"

typedef struct KlingHttpRequest
{
	/* What the request is for; carried for the caller. */
	KlingRequestKind kind;
	int64		task_id;
	int			attempts;		/* transient failures so far */
	int			first_poll_ms;	/* creates: when to poll first, once accepted */
	bool		learned;		/* the history knows how long such tasks take */

	bool		create_tried;	/* curl has begun sending the create */

	/* The response, filled in as it arrives (buffers are malloc'd). */
	long		http_status;
	char	   *body;
	size_t		body_len;
	size_t		body_cap;
	bool		oversized;
	bool		request_sent;
	char		retry_after[64];
	CURLcode	curl_result;
	char		curl_error[CURL_ERROR_SIZE];

	CURL	   *easy;
	struct curl_slist *headers;
	dlist_node	node;
} KlingHttpRequest;

extern void kling_http_init(void);
extern KlingHttpRequest *kling_http_start(KlingRequestKind kind, int64 task_id,
										  int attempts, const char *url,
										  const char *post_body);
extern bool kling_http_wait(long timeout_ms, uint32 wait_event_info);
extern KlingHttpRequest *kling_http_next_done(void);
extern bool kling_http_has_done(void);
extern const char *kling_http_failure(KlingHttpRequest *req);
extern void kling_http_free(KlingHttpRequest *req);
extern int	kling_http_active(void);
extern int	kling_http_running_tasks(KlingRequestKind kind, int64 *ids);

#endif							/* KLING_HTTP_H */
