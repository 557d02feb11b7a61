/*
 * fastmock.c: a minimal, fast mock of the provider's create and poll routes,
 * for test/bench.  One thread, epoll, non-blocking sockets, HTTP/1.1 with
 * keep-alive; canned JSON bodies.  It is fast enough never to be the
 * bottleneck of the worker it serves (tens of thousands of requests per
 * second on one core), and it stamps the arrival of every create with
 * microsecond resolution for the wake-latency figure.
 *
 *   POST /v2/generate/video/kling/generation   201 {"id": "...", "status": "queued"}
 *   POST /v2/video/generations                 200 (same body)
 *   GET  <either path>?generation_id=ID        200 {"id": ID, "status": "completed",
 *                                                   "video": {"url": ...}}
 *                                              or  {"id": ID, "status": "generating"}
 *   GET  /__mock/mode/completed | /__mock/mode/generating   what polls answer
 *   GET  /__mock/stats    {"creates": N, "polls": N, "connections": N}
 *   GET  /__mock/flush    flush the arrival log
 *
 * Every create is logged as "<epoch seconds>.<microseconds> <token>\n" to
 * the arrival log (-l), where the time is taken when the request's last
 * byte has been read, and token is the run of characters that follows
 * "bench#" in the body ("-" if none).  The log is block-buffered; GET
 * /__mock/flush or SIGTERM flushes it.
 *
 * Usage: fastmock -f PORT_FILE [-P PID_FILE] [-p PORT] [-l ARRIVAL_LOG [-L]]
 *                 [-m completed|generating]
 * -L logs every poll too, as "<time> poll:<generation id>" (for diagnosis).
 * Listens on 127.0.0.1 only; PORT 0 (the default) picks a free port, which
 * is written to PORT_FILE once the socket listens (after PID_FILE, which
 * gets the process id).  SIGTERM or SIGINT stops it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST (1 << 20)		/* larger requests are refused */
#define MAX_EVENTS 512

typedef struct Conn
{
	int			fd;
	char	   *in;
	size_t		in_len;
	size_t		in_cap;
	char	   *out;
	size_t		out_len;
	size_t		out_off;
	size_t		out_cap;
	int			close_after;	/* close once out is flushed */
	int			peer_closed;	/* the client closed its end */
	int			sent_continue;	/* 100 Continue already sent */
	struct timespec last_read;	/* when the latest bytes arrived */
} Conn;

static volatile sig_atomic_t stop = 0;
static int	mode_completed = 1;
static unsigned long long n_creates = 0,
			n_polls = 0,
			n_conns = 0,
			id_seq = 0;
static FILE *arrival_log = NULL;
static int	log_polls = 0;		/* -L: log polls too, as "<time> poll:<id>" */
static int	epfd;

static void
on_signal(int sig)
{
	(void) sig;
	stop = 1;
}

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

static void
out_append(Conn *c, const char *data, size_t len)
{
	if (c->out_len + len > c->out_cap)
	{
		size_t		cap = c->out_cap ? c->out_cap : 1024;

		while (cap < c->out_len + len)
			cap *= 2;
		c->out = realloc(c->out, cap);
		if (c->out == NULL)
			die("realloc");
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
}

static void
respond(Conn *c, int status, const char *body)
{
	char		head[256];
	const char *reason = status == 200 ? "OK" : status == 201 ? "Created" :
		status == 404 ? "Not Found" : "Bad Request";
	size_t		blen = strlen(body);
	int			n;

	n = snprintf(head, sizeof(head),
				 "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
				 "Content-Length: %zu\r\n%s\r\n",
				 status, reason, blen, c->close_after ? "Connection: close\r\n" : "");
	out_append(c, head, n);
	out_append(c, body, blen);
}

/* Case-insensitive search for a header's value in the head; NULL if absent. */
static const char *
header_value(const char *head, size_t head_len, const char *name, size_t *vlen)
{
	size_t		nlen = strlen(name);
	const char *p = memchr(head, '\n', head_len);	/* skip the request line */

	while (p != NULL && (size_t) (p + 1 - head) < head_len)
	{
		const char *line = p + 1;
		const char *eol = memchr(line, '\n', head_len - (line - head));

		if (eol == NULL)
			break;
		if ((size_t) (eol - line) > nlen && strncasecmp(line, name, nlen) == 0 &&
			line[nlen] == ':')
		{
			const char *v = line + nlen + 1;
			const char *e = eol;

			while (v < e && (*v == ' ' || *v == '\t'))
				v++;
			while (e > v && (e[-1] == '\r' || e[-1] == ' '))
				e--;
			*vlen = e - v;
			return v;
		}
		p = eol;
	}
	return NULL;
}

static void
url_decode(const char *s, size_t len, char *out, size_t outsz)
{
	size_t		o = 0;

	for (size_t i = 0; i < len && o + 1 < outsz; i++)
	{
		if (s[i] == '%' && i + 2 < len)
		{
			char		hex[3] = {s[i + 1], s[i + 2], 0};

			out[o++] = (char) strtol(hex, NULL, 16);
			i += 2;
		}
		else if (s[i] == '+')
			out[o++] = ' ';
		else
			out[o++] = s[i];
	}
	out[o] = '\0';
}

static int
is_route(const char *path, size_t len)
{
	static const char *const routes[] = {
		"/v2/generate/video/kling/generation", "/v2/video/generations"};

	for (int i = 0; i < 2; i++)
		if (len == strlen(routes[i]) && memcmp(path, routes[i], len) == 0)
			return i + 1;
	return 0;
}

/* Handle one complete request: head (head_len bytes) and body. */
static void
handle(Conn *c, const char *head, size_t head_len, const char *body, size_t body_len)
{
	const char *sp1 = memchr(head, ' ', head_len);
	const char *target,
			   *sp2,
			   *q;
	size_t		path_len;
	char		buf[1024];

	if (sp1 == NULL)
	{
		c->close_after = 1;
		respond(c, 400, "{\"message\":\"bad request line\"}");
		return;
	}
	target = sp1 + 1;
	sp2 = memchr(target, ' ', head_len - (target - head));
	if (sp2 == NULL)
		sp2 = head + head_len;
	q = memchr(target, '?', sp2 - target);
	path_len = (q ? q : sp2) - target;

	if (sp1 - head == 4 && memcmp(head, "POST", 4) == 0)
	{
		int			route = is_route(target, path_len);

		if (route)
		{
			const char *tok = memmem(body, body_len, "bench#", 6);
			size_t		tlen = 0;
			unsigned long long seq = ++id_seq;

			n_creates++;
			if (arrival_log != NULL)
			{
				if (tok != NULL)
				{
					tok += 6;
					while (tok + tlen < body + body_len &&
						   (tok[tlen] == '-' || tok[tlen] == '_' ||
							(tok[tlen] >= '0' && tok[tlen] <= '9') ||
							(tok[tlen] >= 'a' && tok[tlen] <= 'z')))
						tlen++;
				}
				fprintf(arrival_log, "%lld.%06ld %.*s\n",
						(long long) c->last_read.tv_sec, c->last_read.tv_nsec / 1000,
						tlen ? (int) tlen : 1, tlen ? tok : "-");
			}
			snprintf(buf, sizeof(buf),
					 "{\"id\":\"%08llx-b3c4-4d5e-8f60-%012llx:kling-video/v2.1/master/text-to-video\","
					 "\"status\":\"queued\"}", seq, seq);
			respond(c, route == 1 ? 201 : 200, buf);
			return;
		}
	}
	else if (sp1 - head == 3 && memcmp(head, "GET", 3) == 0)
	{
		if (is_route(target, path_len))
		{
			const char *g = q ? memmem(q, sp2 - q, "generation_id=", 14) : NULL;
			char		id[512];

			if (g == NULL)
			{
				respond(c, 400, "{\"message\":\"generation_id is required\"}");
				return;
			}
			g += 14;
			{
				const char *e = memchr(g, '&', sp2 - g);

				url_decode(g, (e ? e : sp2) - g, id, sizeof(id));
			}
			for (char *p = id; *p; p++)
				if (*p == '"' || *p == '\\' || (unsigned char) *p < 0x20)
					*p = '_';
			n_polls++;
			if (arrival_log != NULL && log_polls)
				fprintf(arrival_log, "%lld.%06ld poll:%s\n",
						(long long) c->last_read.tv_sec, c->last_read.tv_nsec / 1000, id);
			if (mode_completed)
				snprintf(buf, sizeof(buf),
						 "{\"id\":\"%s\",\"status\":\"completed\","
						 "\"video\":{\"url\":\"https://cdn.example/%llu.mp4\"}}",
						 id, n_polls);
			else
				snprintf(buf, sizeof(buf),
						 "{\"id\":\"%s\",\"status\":\"generating\",\"video\":null}", id);
			respond(c, 200, buf);
			return;
		}
		if (path_len == 23 && memcmp(target, "/__mock/mode/generating", 23) == 0)
		{
			mode_completed = 0;
			respond(c, 200, "{\"ok\":true,\"mode\":\"generating\"}");
			return;
		}
		if (path_len == 22 && memcmp(target, "/__mock/mode/completed", 22) == 0)
		{
			mode_completed = 1;
			respond(c, 200, "{\"ok\":true,\"mode\":\"completed\"}");
			return;
		}
		if (path_len == 13 && memcmp(target, "/__mock/stats", 13) == 0)
		{
			snprintf(buf, sizeof(buf),
					 "{\"creates\":%llu,\"polls\":%llu,\"connections\":%llu}\n",
					 n_creates, n_polls, n_conns);
			respond(c, 200, buf);
			return;
		}
		if (path_len == 13 && memcmp(target, "/__mock/flush", 13) == 0)
		{
			if (arrival_log != NULL)
				fflush(arrival_log);
			respond(c, 200, "{\"ok\":true}\n");
			return;
		}
	}
	respond(c, 404, "{\"message\":\"not found\",\"statusCode\":404}");
}

static void
conn_close(Conn *c)
{
	epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
}

/* Write what is pending; returns -1 if the connection was closed. */
static int
conn_flush(Conn *c)
{
	while (c->out_off < c->out_len)
	{
		ssize_t		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
							 MSG_NOSIGNAL);

		if (n < 0)
		{
			if (errno == EAGAIN || errno == EWOULDBLOCK)
			{
				struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

				epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
				return 0;
			}
			if (errno == EINTR)
				continue;
			conn_close(c);
			return -1;
		}
		c->out_off += n;
	}
	c->out_off = c->out_len = 0;
	if (c->close_after)
	{
		conn_close(c);
		return -1;
	}
	{
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};

		epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
	}
	return 0;
}

/* Handle every complete request in the input buffer. */
static void
conn_process(Conn *c)
{
	size_t		off = 0;

	while (!c->close_after || c->peer_closed)
	{
		char	   *start = c->in + off;
		size_t		avail = c->in_len - off;
		char	   *end = memmem(start, avail, "\r\n\r\n", 4);
		size_t		head_len,
					body_len = 0,
					vlen;
		const char *v;

		if (end == NULL)
			break;
		head_len = end + 4 - start;
		if ((v = header_value(start, head_len, "Content-Length", &vlen)) != NULL)
			body_len = strtoul(v, NULL, 10);
		if ((v = header_value(start, head_len, "Transfer-Encoding", &vlen)) != NULL)
		{
			c->close_after = 1;
			respond(c, 400, "{\"message\":\"chunked bodies are not supported\"}");
			break;
		}
		if (body_len > MAX_REQUEST)
		{
			c->close_after = 1;
			respond(c, 400, "{\"message\":\"body too large\"}");
			break;
		}
		if (avail < head_len + body_len)
		{
			if (!c->sent_continue &&
				(v = header_value(start, head_len, "Expect", &vlen)) != NULL &&
				vlen >= 12 && strncasecmp(v, "100-continue", 12) == 0)
			{
				out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
				c->sent_continue = 1;
			}
			break;
		}
		if ((v = header_value(start, head_len, "Connection", &vlen)) != NULL &&
			vlen == 5 && strncasecmp(v, "close", 5) == 0)
			c->close_after = 1;
		c->sent_continue = 0;
		handle(c, start, head_len, start + head_len, body_len);
		off += head_len + body_len;
	}
	if (off > 0)
	{
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	if (c->in_len >= MAX_REQUEST + 65536)
	{
		c->close_after = 1;
		respond(c, 400, "{\"message\":\"request too large\"}");
	}
	conn_flush(c);
}

static void
conn_read(Conn *c)
{
	for (;;)
	{
		ssize_t		n;

		if (c->in_cap - c->in_len < 4096)
		{
			size_t		cap = c->in_cap ? c->in_cap * 2 : 8192;

			c->in = realloc(c->in, cap);
			if (c->in == NULL)
				die("realloc");
			c->in_cap = cap;
		}
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
		if (n > 0)
		{
			clock_gettime(CLOCK_REALTIME, &c->last_read);
			c->in_len += n;
			continue;
		}
		if (n == 0)
		{
			/* Peer closed: answer what is complete, then close. */
			c->close_after = 1;
			c->peer_closed = 1;
			conn_process(c);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		conn_close(c);
		return;
	}
	conn_process(c);
}

int
main(int argc, char **argv)
{
	const char *port_file = NULL,
			   *pid_file = NULL,
			   *log_path = NULL;
	int			port = 0,
				opt,
				lfd,
				one = 1;
	struct sockaddr_in addr;
	socklen_t	alen = sizeof(addr);
	struct epoll_event ev,
				events[MAX_EVENTS];
	Conn		listener_tag;
	struct sigaction sa;

	while ((opt = getopt(argc, argv, "f:P:p:l:Lm:")) != -1)
	{
		switch (opt)
		{
			case 'f':
				port_file = optarg;
				break;
			case 'P':
				pid_file = optarg;
				break;
			case 'p':
				port = atoi(optarg);
				break;
			case 'l':
				log_path = optarg;
				break;
			case 'L':
				log_polls = 1;
				break;
			case 'm':
				mode_completed = strcmp(optarg, "generating") != 0;
				break;
			default:
				fprintf(stderr, "usage: %s -f PORT_FILE [-P PID_FILE] [-p PORT] [-l LOG [-L]] [-m completed|generating]\n",
						argv[0]);
				return 2;
		}
	}
	if (port_file == NULL)
	{
		fprintf(stderr, "%s: -f PORT_FILE is required\n", argv[0]);
		return 2;
	}
	if (log_path != NULL)
	{
		arrival_log = fopen(log_path, "w");
		if (arrival_log == NULL)
			die(log_path);
		setvbuf(arrival_log, NULL, _IOFBF, 1 << 20);
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_port = htons(port);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *) &addr, sizeof(addr)) < 0)
		die("bind");
	if (listen(lfd, 4096) < 0)
		die("listen");
	if (getsockname(lfd, (struct sockaddr *) &addr, &alen) < 0)
		die("getsockname");

	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (epfd < 0)
		die("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.ptr = &listener_tag;
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);

	if (pid_file != NULL)
	{
		FILE	   *f = fopen(pid_file, "w");

		if (f == NULL)
			die(pid_file);
		fprintf(f, "%d\n", (int) getpid());
		fclose(f);
	}
	{
		char		tmp[4096];
		FILE	   *f;

		snprintf(tmp, sizeof(tmp), "%s.tmp", port_file);
		f = fopen(tmp, "w");
		if (f == NULL)
			die(tmp);
		fprintf(f, "%d\n", ntohs(addr.sin_port));
		fclose(f);
		if (rename(tmp, port_file) < 0)
			die("rename");
	}

	while (!stop)
	{
		int			n = epoll_wait(epfd, events, MAX_EVENTS, 1000);

		if (n < 0)
		{
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++)
		{
			if (events[i].data.ptr == &listener_tag)
			{
				for (;;)
				{
					int			fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
					Conn	   *c;

					if (fd < 0)
						break;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c = calloc(1, sizeof(Conn));
					if (c == NULL)
						die("calloc");
					c->fd = fd;
					n_conns++;
					ev.events = EPOLLIN;
					ev.data.ptr = c;
					epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			{
				Conn	   *c = events[i].data.ptr;

				if (events[i].events & EPOLLOUT)
				{
					if (conn_flush(c) < 0)
						continue;
				}
				if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					conn_read(c);
			}
		}
	}
	if (arrival_log != NULL)
		fclose(arrival_log);
	unlink(port_file);
	if (pid_file != NULL)
		unlink(pid_file);
	return 0;
}
