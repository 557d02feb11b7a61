/*-------------------------------------------------------------------------
 *
 * download.c
 *		Fetch a completed video into a temporary file.
 *
 * The transfer runs in the worker's curl multi handle beside the
 * provider's requests, so it never blocks a poll or a create.  Bytes go
 * straight to a file (and through SHA-256) as they arrive: the worker holds
 * no more than curl's buffer of any file, however large.
 *
 * The URL comes from the provider's answer, so it is not trusted: no API
 * key is sent, redirects stay within http(s), and unless
 * kling.download_allow_private is on, only https to public addresses is
 * allowed.  The address is checked as each connection opens, after name
 * resolution and redirects, so neither a redirect nor a name that resolves
 * to an internal address gets around it.
 *
 * Files are named like PostgreSQL's own temporary files, in its temporary
 * directory, so that the server removes any a crash left behind.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "common/file_perm.h"
#include "common/file_utils.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"
#include "utils/resowner.h"

#include "download.h"
#include "settings.h"
#include "video_settings.h"

#define KLING_TEMP_DIR "base/" PG_TEMP_FILES_DIR
#define KLING_MAX_REDIRECTS 5L
/* curl's receive buffer per download (its default is 16 kB). */
#define KLING_DOWNLOAD_BUFFER (256L * 1024)
/* A transfer slower than this for kling.request_timeout is given up. */
#define KLING_LOW_SPEED_BYTES 1024L

/* Hashes outlive transactions: they belong to an owner of their own. */
static ResourceOwner kling_download_owner = NULL;

/* Whether an IPv4 address (host order) is loopback, private or otherwise not public. */
static bool
kling_ipv4_is_private(uint32 a)
{
	return (a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
		(a >> 22) == (100 << 2 | 1) ||	/* 100.64.0.0/10 */
		(a >> 16) == (169 << 8 | 254) ||
		(a >> 20) == (172 << 4 | 1) ||	/* 172.16.0.0/12 */
		(a >> 8) == (192u << 16 | 0 << 8 | 0) ||	/* 192.0.0.0/24 */
		(a >> 16) == (192u << 8 | 168) ||
		(a >> 17) == (198u << 7 | 9) ||	/* 198.18.0.0/15 */
		(a >> 28) >= 14;		/* multicast, reserved, broadcast */
}

/*
 * Whether an address is one a download may not reach by default: loopback,
 * private, link-local, unique-local, multicast, unspecified, or an IPv4
 * address of such a kind inside IPv6.
 */
bool
kling_address_is_private(const struct sockaddr *addr)
{
	if (addr->sa_family == AF_INET)
		return kling_ipv4_is_private(ntohl(((const struct sockaddr_in *) addr)->sin_addr.s_addr));
	if (addr->sa_family == AF_INET6)
	{
		const uint8 *b = ((const struct sockaddr_in6 *) addr)->sin6_addr.s6_addr;
		static const uint8 mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		static const uint8 zeros[15] = {0};

		if (memcmp(b, mapped, 12) == 0 || memcmp(b, zeros, 12) == 0)
			return memcmp(b, zeros, 15) == 0 ||	/* :: and ::1 */
				kling_ipv4_is_private((uint32) b[12] << 24 | b[13] << 16 | b[14] << 8 | b[15]);
		return (b[0] & 0xfe) == 0xfc || /* fc00::/7 */
			(b[0] == 0xfe && (b[1] & 0xc0) == 0x80) ||	/* fe80::/10 */
			b[0] == 0xff;		/* multicast */
	}
	return true;
}

/*
 * curl opens a connection: to a public address, or a private one if
 * allowed; plain http only to a private one.  Never raises an error.
 */
static curl_socket_t
kling_open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *address)
{
	KlingDownload *d = userp;
	bool		private = kling_address_is_private(&address->addr);
	char	   *scheme = NULL;

	if (private && !kling_download_allow_private)
	{
		d->refused = "the video URL leads to a loopback or private address (kling.download_allow_private is off)";
		return CURL_SOCKET_BAD;
	}
	if (!private && d->request != NULL &&
		curl_easy_getinfo(d->request->easy, CURLINFO_SCHEME, &scheme) == CURLE_OK &&
		scheme != NULL && pg_strcasecmp(scheme, "https") != 0)
	{
		d->refused = "plain http to a public address";
		return CURL_SOCKET_BAD;
	}
	return socket(address->family, address->socktype, address->protocol);
}

/* Bytes arrive: into the file and the hash, within the size limit. */
static size_t
kling_download_write(char *data, size_t size, size_t nmemb, void *userp)
{
	KlingDownload *d = userp;
	size_t		n = size * nmemb;
	size_t		done = 0;

	if (d->size + (int64) n > d->limit)
	{
		d->too_large = true;
		return 0;
	}
	while (done < n)
	{
		ssize_t		w = write(d->fd, data + done, n - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
		{
			d->write_failed = true;
			return 0;
		}
		done += w;
	}
	if (pg_cryptohash_update(d->sha, (const void *) data, n) < 0)
	{
		d->write_failed = true;
		return 0;
	}
	d->size += n;
	return n;
}

/* A new hash, owned by the downloads' own resource owner; NULL if none. */
static pg_cryptohash_ctx *
kling_new_sha256(void)
{
	ResourceOwner save = CurrentResourceOwner;
	pg_cryptohash_ctx *ctx;

	if (kling_download_owner == NULL)
		kling_download_owner = ResourceOwnerCreate(NULL, "kling downloads");
	CurrentResourceOwner = kling_download_owner;
	ctx = pg_cryptohash_create(PG_SHA256);
	if (ctx != NULL && pg_cryptohash_init(ctx) < 0)
	{
		pg_cryptohash_free(ctx);
		ctx = NULL;
	}
	CurrentResourceOwner = save;
	return ctx;
}

/*
 * Open the file a task's video goes to while it is fetched and stored;
 * false, with the error set, if it cannot be.
 */
static bool
kling_download_open(KlingDownload *d)
{
	snprintf(d->path, sizeof(d->path), "%s/%skling_%d_" INT64_FORMAT,
			 KLING_TEMP_DIR, PG_TEMP_FILE_PREFIX, MyProcPid, d->task_id);
	if (MakePGDirectory(KLING_TEMP_DIR) < 0 && errno != EEXIST)
		d->error = psprintf("could not create directory \"%s\": %s", KLING_TEMP_DIR, strerror(errno));
	else if ((d->fd = open(d->path, O_RDWR | O_CREAT | O_TRUNC | PG_BINARY, pg_file_create_mode)) < 0)
		d->error = psprintf("could not create file \"%s\": %s", d->path, strerror(errno));
	else if ((d->sha = kling_new_sha256()) == NULL)
		d->error = pstrdup("could not start a SHA-256 hash");
	return d->error == NULL;
}

/*
 * Start fetching a task's video (allocated in the current memory context,
 * which must outlive the transfer).  Raises no error, outside any
 * transaction: one that cannot start is finished at once, to be retried.
 */
KlingDownload *
kling_download_start(int64 task_id, const char *url, int attempts)
{
	KlingDownload *d = palloc0(sizeof(KlingDownload));
	const char *protocols = kling_download_allow_private ? "http,https" : "https";
	CURL	   *easy;

	d->task_id = task_id;
	d->attempts = attempts;
	d->limit = kling_max_video_bytes();
	d->fd = -1;
	d->outcome = KLING_FETCH_RUNNING;
	if (!kling_download_open(d))
	{
		d->outcome = KLING_FETCH_RETRY;
		return d;
	}

	easy = kling_http_easy();
	if (easy != NULL)
	{
		curl_easy_setopt(easy, CURLOPT_URL, url);
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
		/* No API key, no proxy, no other schemes, not even after a redirect. */
		kling_http_transport(easy, protocols, false);
		curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, protocols);
		curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(easy, CURLOPT_MAXREDIRS, KLING_MAX_REDIRECTS);
		curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, kling_open_socket);
		curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, d);
		curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) d->limit);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, KLING_LOW_SPEED_BYTES);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, Max(1L, kling_request_timeout_ms / 1000L));
		/* Larger reads: fewer callbacks, writes and hash updates per file. */
		curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, KLING_DOWNLOAD_BUFFER);
		curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, kling_download_write);
		curl_easy_setopt(easy, CURLOPT_WRITEDATA, d);
	}
	d->request = kling_http_start_transfer(easy, d);
	return d;
}

/* Whether an HTTP status is worth another try later. */
bool
kling_status_is_transient(long status)
{
	return status == 408 || status == 425 || status == 429 || status >= 500;
}

/*
 * The transfer is done: decide what it came to, and finish the hash.  The
 * request is freed; the file stays until kling_download_discard().
 */
void
kling_download_finished(KlingDownload *d)
{
	KlingHttpRequest *req = d->request;
	CURLcode	result = req->curl_result;
	char	   *type = NULL;
	uint8		digest[32];

	if (req->easy != NULL && curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE, &type) == CURLE_OK && type)
		strlcpy(d->content_type, type, sizeof(d->content_type));
	else
		strlcpy(d->content_type, "video/mp4", sizeof(d->content_type));

	if (d->refused != NULL)
		d->outcome = KLING_FETCH_REFUSED, d->error = pstrdup(d->refused);
	else if (d->too_large || result == CURLE_FILESIZE_EXCEEDED)
		d->outcome = KLING_FETCH_REFUSED,
			d->error = psprintf("the video is larger than kling.max_video_size (%lld bytes)",
								(long long) d->limit);
	else if (result == CURLE_UNSUPPORTED_PROTOCOL || result == CURLE_TOO_MANY_REDIRECTS)
		d->outcome = KLING_FETCH_REFUSED,
			d->error = psprintf("refused: %s", kling_http_failure(req));
	else if (d->write_failed)
		d->outcome = KLING_FETCH_RETRY,
			d->error = psprintf("could not write \"%s\": %s", d->path, strerror(errno));
	else if (result != CURLE_OK)
		d->outcome = KLING_FETCH_RETRY, d->error = pstrdup(kling_http_failure(req));
	else if (req->http_status != 200)
		d->outcome = kling_status_is_transient(req->http_status) ? KLING_FETCH_RETRY : KLING_FETCH_REFUSED,
			d->error = psprintf("HTTP %ld from the video URL", req->http_status);
	else if (d->size == 0)
		d->outcome = KLING_FETCH_RETRY, d->error = pstrdup("the video URL answered an empty file");
	else if (pg_cryptohash_final(d->sha, digest, sizeof(digest)) < 0)
		d->outcome = KLING_FETCH_RETRY, d->error = pstrdup("could not finish the SHA-256 hash");
	else
	{
		d->outcome = KLING_FETCH_DONE;
		for (int i = 0; i < 32; i++)
			sprintf(d->sha256 + 2 * i, "%02x", digest[i]);
	}
	kling_http_free(req);
	d->request = NULL;
}

/* Forget a download: stop it if it runs, close and remove its file. */
void
kling_download_discard(KlingDownload *d)
{
	if (d->request != NULL)
	{
		kling_http_cancel(d->request);
		d->request = NULL;
	}
	if (d->sha != NULL)
	{
		ResourceOwner save = CurrentResourceOwner;

		CurrentResourceOwner = kling_download_owner;
		pg_cryptohash_free(d->sha);
		CurrentResourceOwner = save;
		d->sha = NULL;
	}
	curl_slist_free_all(d->upload_headers);
	d->upload_headers = NULL;
	if (d->fd >= 0)
		close(d->fd);
	d->fd = -1;
	(void) unlink(d->path);
}
