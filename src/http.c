/*-------------------------------------------------------------------------
 *
 * http.c
 *		The worker's HTTP client: every request goes through one libcurl
 *		multi handle, driven by the socket events of the worker's own wait,
 *		so that many requests are in flight and none waits on another.
 *
 * The sockets curl asks to watch are kept in an epoll set of their own,
 * changed only when curl changes what it watches; the worker's wait covers
 * its latch, postmaster death and that one epoll descriptor, with a
 * timeout that is the earlier of curl's timer and the caller's.  So the
 * worker sleeps without CPU until something happens, a wait costs the same
 * whatever the number of connections, and a stalled request never holds up
 * the others or a signal.  (epoll: the extension is built for Linux.)
 *
 * curl's callbacks never call anything that can raise an error: they only
 * copy bytes into malloc'd buffers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>
#include <sys/epoll.h>

#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "compat.h"
#include "http.h"
#include "settings.h"

/*
 * A send-once request reuses a connection only if it has been idle at most
 * this long (seconds): servers close idle connections after a minute or more.
 */
#define KLING_SEND_ONCE_MAX_IDLE_S 5L

static CURLM *kling_multi = NULL;
static MemoryContext kling_http_context = NULL;

/* The sockets curl watches, and the worker's wait on them. */
static int	kling_epoll_fd = -1;
static WaitEventSet *kling_wait_set = NULL;

/* Ready sockets taken from the epoll set at a time. */
#define KLING_READY_BATCH 64

static bool kling_timer_set = false;
static TimestampTz kling_timer_deadline = 0;

static int	kling_active = 0;

/* Handles of finished requests, reset, for the next requests to reuse. */
#define KLING_MAX_IDLE_HANDLES 256
static CURL *kling_idle[KLING_MAX_IDLE_HANDLES];
static int	kling_nidle = 0;
static dlist_head kling_running = DLIST_STATIC_INIT(kling_running);
static dlist_head kling_done = DLIST_STATIC_INIT(kling_done);

static int	kling_socket_callback(CURL *easy, curl_socket_t fd, int what,
								  void *userp, void *socketp);
static int	kling_timer_callback(CURLM *multi, long timeout_ms, void *userp);
static size_t kling_write_callback(char *data, size_t size, size_t nmemb,
								   void *userp);
static size_t kling_header_callback(char *data, size_t size, size_t nitems,
									void *userp);
static int	kling_prereq_callback(void *userp, char *conn_primary_ip,
								  char *conn_local_ip, int conn_primary_port,
								  int conn_local_port);
static void kling_collect_done(void);
static void kling_serve_ready_sockets(void);
static void kling_run_expired_timer(void);
static KlingHttpRequest *kling_http_run(KlingHttpRequest *req);

/*
 * Set up curl and the multi handle.  Called once by the worker.
 */
void
kling_http_init(void)
{
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		elog(ERROR, "could not initialize libcurl");

	kling_multi = curl_multi_init();
	if (kling_multi == NULL)
		elog(ERROR, "could not create a libcurl multi handle");

	curl_multi_setopt(kling_multi, CURLMOPT_SOCKETFUNCTION, kling_socket_callback);
	curl_multi_setopt(kling_multi, CURLMOPT_TIMERFUNCTION, kling_timer_callback);

	kling_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (kling_epoll_fd < 0)
		elog(ERROR, "could not create an epoll set: %m");
	kling_wait_set = kling_create_wait_event_set(3);
	AddWaitEventToSet(kling_wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(kling_wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	AddWaitEventToSet(kling_wait_set, WL_SOCKET_READABLE, kling_epoll_fd, NULL, NULL);

	kling_http_context = AllocSetContextCreate(TopMemoryContext,
											   "kling HTTP requests",
											   ALLOCSET_DEFAULT_SIZES);
}

/*
 * curl tells which sockets to watch, and for what: change the epoll set.
 * A socket already in it carries a mark (socketp) that curl keeps for it.
 */
static int
kling_socket_callback(CURL *easy, curl_socket_t fd, int what, void *userp,
					  void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* curl may have closed it already, which took it out of the set. */
		(void) epoll_ctl(kling_epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}

	memset(&ev, 0, sizeof(ev));
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	ev.data.fd = fd;
	if (epoll_ctl(kling_epoll_fd, socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) != 0 &&
		epoll_ctl(kling_epoll_fd, socketp ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &ev) != 0)
		return -1;
	if (socketp == NULL)
		curl_multi_assign(kling_multi, fd, &kling_epoll_fd);
	return 0;
}

/* curl tells when it next wants to be called for its timeouts. */
static int
kling_timer_callback(CURLM *multi, long timeout_ms, void *userp)
{
	kling_timer_set = (timeout_ms >= 0);
	if (kling_timer_set)
		kling_timer_deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
														   timeout_ms);
	return 0;
}

/* Collect the body, up to the limit; past it, abort the transfer. */
static size_t
kling_write_callback(char *data, size_t size, size_t nmemb, void *userp)
{
	KlingHttpRequest *req = userp;
	size_t		n = size * nmemb;

	if (req->body_len + n > KLING_MAX_RESPONSE_BYTES)
	{
		req->oversized = true;
		return 0;
	}
	if (req->body_len + n + 1 > req->body_cap)
	{
		size_t		cap = Max(req->body_cap * 2, req->body_len + n + 1);
		char	   *grown = realloc(req->body, Max(cap, 1024));

		if (grown == NULL)
			return 0;
		req->body = grown;
		req->body_cap = Max(cap, 1024);
	}
	memcpy(req->body + req->body_len, data, n);
	req->body_len += n;
	req->body[req->body_len] = '\0';
	return n;
}

/*
 * Whether the peer has already closed the connection a request is about to
 * go out on.  Bytes sent on it cannot reach the provider's application.
 */
static bool
kling_peer_has_closed(CURL *easy)
{
	curl_socket_t sock = CURL_SOCKET_BAD;
	struct pollfd pfd;

	if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &sock) != CURLE_OK ||
		sock == CURL_SOCKET_BAD)
		return false;
	pfd.fd = sock;
	pfd.events = POLLRDHUP;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) != 1)
		return false;
	return (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

/*
 * curl is about to send a send-once request.  A second time is curl's own
 * retry after the connection died: let it only if the connection tried
 * before had been closed by the peer before anything was sent on it (newer
 * curl reuses a connection closed less than a second ago without checking).
 */
static int
kling_prereq_callback(void *userp, char *conn_primary_ip, char *conn_local_ip,
					  int conn_primary_port, int conn_local_port)
{
	KlingHttpRequest *req = userp;

	if (req->tried && !req->tried_on_closed)
		return CURL_PREREQFUNC_ABORT;
	req->tried = true;
	req->tried_on_closed = kling_peer_has_closed(req->easy);
	return CURL_PREREQFUNC_OK;
}

/* Keep the Retry-After header; the others are not needed. */
static size_t
kling_header_callback(char *data, size_t size, size_t nitems, void *userp)
{
	KlingHttpRequest *req = userp;
	size_t		n = size * nitems;
	const char *name = "retry-after:";
	size_t		namelen = strlen(name);

	if (n > namelen && pg_strncasecmp(data, name, namelen) == 0)
	{
		size_t		len = Min(n - namelen, sizeof(req->retry_after) - 1);

		memcpy(req->retry_after, data + namelen, len);
		req->retry_after[len] = '\0';
		/* drop the line end */
		for (char *p = req->retry_after; *p; p++)
			if (*p == '\r' || *p == '\n')
				*p = '\0';
	}
	return n;
}

/*
 * A request that could not start: it is done at once, never sent, and
 * kling_http_failure() says why.
 */
static KlingHttpRequest *
kling_http_not_started(KlingHttpRequest *req, const char *why)
{
	req->started = false;
	req->finished = true;
	req->curl_result = CURLE_FAILED_INIT;
	strlcpy(req->curl_error, why, sizeof(req->curl_error));
	dlist_push_tail(&kling_done, &req->node);
	return req;
}

/*
 * Start a request: a POST with a JSON body, or a GET when post_body is
 * NULL; owner is the caller's, for it to know the request again when it is
 * done.  It runs while the worker waits; see kling_http_next_done().  It
 * never raises an error: one that cannot start is done at once, unsent.
 */
KlingHttpRequest *
kling_http_start(const char *url, const char *post_body, bool send_once, void *owner)
{
	KlingHttpRequest *req;
	CURL	   *easy;
	char	   *auth;

	req = MemoryContextAllocZero(kling_http_context, sizeof(KlingHttpRequest));
	req->owner = owner;
	req->send_once = send_once;
	req->started = true;
	if (kling_fault("request_start"))
		return kling_http_not_started(req, "injected fault (kling.fault_injection)");

	easy = kling_http_easy();
	if (easy == NULL)
		return kling_http_not_started(req, "could not create a libcurl handle");
	req->easy = easy;

	/* The key is only ever copied into this header; it is never logged. */
	auth = psprintf("Authorization: Bearer %s", kling_effective_api_key());
	req->headers = curl_slist_append(req->headers, auth);
	memset(auth, 0, strlen(auth));
	pfree(auth);
	req->headers = curl_slist_append(req->headers, "Accept: application/json");
	if (post_body != NULL)
	{
		req->headers = curl_slist_append(req->headers, "Content-Type: application/json");
		/* The body is small: no round trip waiting for "100 Continue". */
		req->headers = curl_slist_append(req->headers, "Expect:");
	}

	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	if (post_body != NULL)
		curl_easy_setopt(easy, CURLOPT_COPYPOSTFIELDS, post_body);
	else
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	if (send_once)
	{
		/*
		 * curl sends a request again by itself, on a new connection, when a
		 * reused one turns out closed before any answer.  A send-once
		 * request (a create, which the provider bills) may be tried on one
		 * connection only; if that dies, its outcome is unknown.
		 */
		curl_easy_setopt(easy, CURLOPT_PREREQFUNCTION, kling_prereq_callback);
		curl_easy_setopt(easy, CURLOPT_PREREQDATA, req);
		/* Connections long idle are the ones a server closes under us. */
		curl_easy_setopt(easy, CURLOPT_MAXAGE_CONN, KLING_SEND_ONCE_MAX_IDLE_S);
	}

	kling_http_transport(easy, "http,https", true);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) kling_request_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, kling_write_callback);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, kling_header_callback);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	return kling_http_run(req);
}

/*
 * Hand a request whose handle is set up to the multi handle; it is done
 * at once, unsent, if that fails.
 */
static KlingHttpRequest *
kling_http_run(KlingHttpRequest *req)
{
	curl_easy_setopt(req->easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, req->curl_error);
	curl_easy_setopt(req->easy, CURLOPT_PRIVATE, req);
	if (curl_multi_add_handle(kling_multi, req->easy) != CURLM_OK)
		return kling_http_not_started(req, "could not add the request to the libcurl multi handle");
	kling_active++;
	dlist_push_tail(&kling_running, &req->node);
	return req;
}

/*
 * What every transfer shares: the schemes it may use, TLS verified (with
 * kling.ca_file's certificates if set), the connect timeout, our name;
 * and kling.proxy, if wanted and configured (the server's environment is
 * never used).
 */
void
kling_http_transport(CURL *easy, const char *protocols, bool use_proxy)
{
	curl_easy_setopt(easy, CURLOPT_PROXY,
					 use_proxy && kling_proxy != NULL ? kling_proxy : "");
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, protocols);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	if (kling_ca_file != NULL && kling_ca_file[0] != '\0')
		curl_easy_setopt(easy, CURLOPT_CAINFO, kling_ca_file);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) kling_request_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "kling-postgresql");
}

/*
 * A curl handle, or NULL: one of a finished request (it keeps its buffers
 * and connections' state) if there is one.
 */
CURL *
kling_http_easy(void)
{
	return kling_nidle > 0 ? kling_idle[--kling_nidle] : curl_easy_init();
}

/*
 * Start a transfer the caller has set up on a handle of kling_http_easy()
 * (a download, an upload): it runs in the same multi handle as the
 * provider's requests, and is done and freed the same way.  Its response
 * fields are filled in but the body, which the caller's own callbacks take.
 */
KlingHttpRequest *
kling_http_start_transfer(CURL *easy, void *owner)
{
	KlingHttpRequest *req = MemoryContextAllocZero(kling_http_context, sizeof(KlingHttpRequest));

	req->owner = owner;
	req->started = true;
	req->easy = easy;
	if (easy == NULL)
		return kling_http_not_started(req, "could not create a libcurl handle");
	return kling_http_run(req);
}

/*
 * Wait until the latch is set, a socket is ready, curl's timer or the
 * caller's timeout (-1: none) expires; then let curl do its work.  Returns
 * true if the latch was set (the caller resets it).
 */
bool
kling_http_wait(long timeout_ms, uint32 wait_event_info)
{
	WaitEvent	events[3];
	int			n;
	bool		latch_set = false;
	long		timeout = timeout_ms;

	if (kling_timer_set)
	{
		long		secs;
		int			usecs;
		long		curl_ms;

		TimestampDifference(GetCurrentTimestamp(), kling_timer_deadline, &secs, &usecs);
		curl_ms = secs * 1000 + (usecs + 999) / 1000;
		if (timeout < 0 || curl_ms < timeout)
			timeout = curl_ms;
	}

	n = WaitEventSetWait(kling_wait_set, timeout, events, lengthof(events), wait_event_info);
	for (int i = 0; i < n; i++)
	{
		if (events[i].events & WL_LATCH_SET)
			latch_set = true;
		else if (events[i].events & WL_SOCKET_READABLE)
			kling_serve_ready_sockets();
	}

	kling_run_expired_timer();
	kling_collect_done();
	return latch_set;
}

/*
 * Let curl do what it can right now, without waiting: for long work in a
 * round (storing a large file), so that the transfers in flight go on
 * meanwhile.  Requests that finish are taken in the next round.
 */
void
kling_http_pump(void)
{
	kling_serve_ready_sockets();
	kling_run_expired_timer();
	kling_collect_done();
}

/* Let curl act on its timer, if it has expired. */
static void
kling_run_expired_timer(void)
{
	int			running;

	if (!kling_timer_set || GetCurrentTimestamp() < kling_timer_deadline)
		return;
	kling_timer_set = false;
	curl_multi_socket_action(kling_multi, CURL_SOCKET_TIMEOUT, 0, &running);
}

/* Let curl act on every socket that is ready now. */
static void
kling_serve_ready_sockets(void)
{
	struct epoll_event ready[KLING_READY_BATCH];
	int			n;

	do
	{
		n = epoll_wait(kling_epoll_fd, ready, lengthof(ready), 0);
		for (int i = 0; i < n; i++)
		{
			int			running;
			int			flags = 0;

			if (ready[i].events & (EPOLLIN | EPOLLHUP))
				flags |= CURL_CSELECT_IN;
			if (ready[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (ready[i].events & EPOLLERR)
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(kling_multi, ready[i].data.fd, flags, &running);
		}
	} while (n == lengthof(ready));
}

/* Move finished transfers from curl to the done list. */
static void
kling_collect_done(void)
{
	CURLMsg    *msg;
	int			queued;

	while ((msg = curl_multi_info_read(kling_multi, &queued)) != NULL)
	{
		KlingHttpRequest *req;
		curl_off_t	sent = 0;

		if (msg->msg != CURLMSG_DONE)
			continue;

		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &req);
		req->curl_result = msg->data.result;
		curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->http_status);
		curl_easy_getinfo(req->easy, CURLINFO_REQUEST_SIZE, &sent);
		/* A refused retry means the request went out on a dead connection. */
		req->request_sent = (sent > 0 || req->tried);

		curl_multi_remove_handle(kling_multi, req->easy);
		kling_active--;
		req->finished = true;
		dlist_delete(&req->node);
		dlist_push_tail(&kling_done, &req->node);
	}
}

/* The next finished request, or NULL. */
KlingHttpRequest *
kling_http_next_done(void)
{
	KlingHttpRequest *req;

	if (dlist_is_empty(&kling_done))
		return NULL;
	req = dlist_container(KlingHttpRequest, node, dlist_pop_head_node(&kling_done));
	req->taken = true;
	return req;
}

/* Whether finished requests wait to be taken. */
bool
kling_http_has_done(void)
{
	return !dlist_is_empty(&kling_done);
}

/*
 * Why a finished request got no complete response, or NULL if it got one
 * (of any HTTP status).
 */
const char *
kling_http_failure(KlingHttpRequest *req)
{
	if (req->oversized)
		return psprintf("response body larger than %d bytes", KLING_MAX_RESPONSE_BYTES);
	if (req->curl_result == CURLE_OK)
		return NULL;
	if (req->curl_error[0] != '\0')
		return req->curl_error;
	return curl_easy_strerror(req->curl_result);
}

/* Release a request and its buffers; its curl handle is kept for the next. */
void
kling_http_free(KlingHttpRequest *req)
{
	if (req->easy == NULL)
		;
	else if (kling_nidle < KLING_MAX_IDLE_HANDLES)
	{
		curl_easy_reset(req->easy);
		kling_idle[kling_nidle++] = req->easy;
	}
	else
		curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->headers);
	free(req->body);
	pfree(req);
}

/*
 * Stop a request wherever it is (running, or finished and not yet taken)
 * and free it.
 */
void
kling_http_cancel(KlingHttpRequest *req)
{
	if (!req->finished)
	{
		curl_multi_remove_handle(kling_multi, req->easy);
		kling_active--;
	}
	if (!req->taken)
		dlist_delete(&req->node);
	kling_http_free(req);
}

/* Requests started and not yet finished. */
int
kling_http_active(void)
{
	return kling_active;
}
