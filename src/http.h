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

/* Bodies larger than this are not read: the request fails. */
#define KLING_MAX_RESPONSE_BYTES (1024 * 1024)

typedef struct KlingHttpRequest
{
	void	   *owner;			/* the caller's, untouched here */
	bool		send_once;		/* never sent twice, not even by curl itself */
	bool		started;		/* false: it never started; see failure */
	bool		tried;			/* curl has begun sending it (send_once) */
	bool		tried_on_closed;	/* ... on a connection the peer had closed */
	bool		finished;		/* curl is done with it */
	bool		taken;			/* handed out by kling_http_next_done */

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
extern KlingHttpRequest *kling_http_start(const char *url, const char *post_body,
										  bool send_once, void *owner);
extern void kling_http_transport(CURL *easy, const char *protocols, bool use_proxy);
extern CURL *kling_http_easy(void);
extern KlingHttpRequest *kling_http_start_transfer(CURL *easy, void *owner);
extern bool kling_http_wait(long timeout_ms, uint32 wait_event_info);
extern void kling_http_pump(void);
extern KlingHttpRequest *kling_http_next_done(void);
extern bool kling_http_has_done(void);
extern const char *kling_http_failure(KlingHttpRequest *req);
extern void kling_http_free(KlingHttpRequest *req);
extern void kling_http_cancel(KlingHttpRequest *req);
extern int	kling_http_active(void);

#endif							/* KLING_HTTP_H */
