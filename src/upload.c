/*-------------------------------------------------------------------------
 *
 * upload.c
 *		Upload a fetched video to an S3-compatible bucket.
 *
 * With kling.storage = s3, a fetched file goes on from its temporary file
 * to the bucket in one PUT, in the same curl multi loop, read from the
 * file as curl sends it.  The request is signed with AWS Signature
 * Version 4 by libcurl; the payload hash it signs is the file's SHA-256,
 * computed as it was fetched, so the service checks every byte.
 *
 * Object keys are kling/<database oid>/<task id>.mp4: characters that
 * need no escaping, so the path curl signs is the one the service checks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "miscadmin.h"

#include "settings.h"
#include "upload.h"
#include "video_settings.h"

/*
 * Why uploads cannot be made with the current settings, or NULL if they
 * can.
 */
const char *
kling_s3_unconfigured(void)
{
	if (kling_s3_endpoint == NULL || kling_s3_endpoint[0] == '\0')
		return "kling.storage is s3 but kling.s3_endpoint is not set";
	if (kling_s3_bucket == NULL || kling_s3_bucket[0] == '\0')
		return "kling.storage is s3 but kling.s3_bucket is not set";
	if (kling_s3_access_key == NULL || kling_s3_access_key[0] == '\0' ||
		kling_s3_secret_key == NULL || kling_s3_secret_key[0] == '\0')
		return "kling.storage is s3 but kling.s3_access_key or kling.s3_secret_key is not set";
	return NULL;
}

/* The service's answer is small XML: dropped. */
static size_t
kling_upload_discard(char *data, size_t size, size_t nmemb, void *userp)
{
	return size * nmemb;
}

/* curl wants more of the body: read it from the file. */
static size_t
kling_upload_read(char *buffer, size_t size, size_t nitems, void *userp)
{
	KlingDownload *d = userp;
	ssize_t		n;

	do
		n = pg_pread(d->fd, buffer, size * nitems, d->sent);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return CURL_READFUNC_ABORT;
	d->sent += n;
	return n;
}

/* curl starts the body again (a retry on a new connection). */
static int
kling_upload_seek(void *userp, curl_off_t offset, int origin)
{
	KlingDownload *d = userp;

	if (origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	d->sent = offset;
	return CURL_SEEKFUNC_OK;
}

/*
 * What every request to the bucket shares: the key's URL (path style),
 * the signature, TLS, the proxy; the answer (small XML) is dropped.
 */
static void
kling_s3_setup(CURL *easy, const char *key, struct curl_slist *headers)
{
	int			len = strlen(kling_s3_endpoint);
	char	   *scope = psprintf("aws:amz:%s:s3", kling_s3_region);
	char	   *url;

	while (len > 0 && kling_s3_endpoint[len - 1] == '/')
		len--;
	url = psprintf("%.*s/%s/%s", len, kling_s3_endpoint, kling_s3_bucket, key);
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, scope);
	curl_easy_setopt(easy, CURLOPT_USERNAME, kling_s3_access_key);
	curl_easy_setopt(easy, CURLOPT_PASSWORD, kling_s3_secret_key);
	kling_http_transport(easy, "http,https", true);
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, kling_upload_discard);
	/* curl keeps copies of the strings. */
	pfree(scope);
	pfree(url);
}

/*
 * Start the upload of a fetched file.  Raises no error (it runs outside
 * any transaction): one that cannot start is finished at once.
 */
void
kling_upload_start(KlingDownload *d)
{
	const char *unconfigured = kling_s3_unconfigured();
	CURL	   *easy;
	char	   *header;

	d->uploading = true;
	d->sent = 0;
	if (unconfigured != NULL)
	{
		d->outcome = KLING_FETCH_RETRY;
		d->error = pstrdup(unconfigured);
		return;
	}
	snprintf(d->key, sizeof(d->key), "kling/%u/" INT64_FORMAT ".mp4", MyDatabaseId, d->task_id);

	header = psprintf("x-amz-content-sha256: %s", d->sha256);
	d->upload_headers = curl_slist_append(NULL, header);
	pfree(header);
	header = psprintf("Content-Type: %s", d->content_type);
	d->upload_headers = curl_slist_append(d->upload_headers, header);
	pfree(header);
	/* No round trip waiting for "100 Continue": the service checks the hash. */
	d->upload_headers = curl_slist_append(d->upload_headers, "Expect:");

	d->outcome = KLING_FETCH_RUNNING;
	easy = kling_http_easy();
	if (easy != NULL)
	{
		kling_s3_setup(easy, d->key, d->upload_headers);
		curl_easy_setopt(easy, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(easy, CURLOPT_INFILESIZE_LARGE, (curl_off_t) d->size);
		curl_easy_setopt(easy, CURLOPT_READFUNCTION, kling_upload_read);
		curl_easy_setopt(easy, CURLOPT_READDATA, d);
		curl_easy_setopt(easy, CURLOPT_SEEKFUNCTION, kling_upload_seek);
		curl_easy_setopt(easy, CURLOPT_SEEKDATA, d);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1024L);
		curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, Max(1L, kling_request_timeout_ms / 1000L));
	}
	d->request = kling_http_start_transfer(easy, d);
}

/*
 * Start deleting an object of the bucket (its task is gone); owner is the
 * caller's, to know the request again.  Raises no error.
 */
KlingHttpRequest *
kling_s3_delete_start(const char *key, void *owner)
{
	/* The hash of the empty body, signed like any other. */
	static struct curl_slist *headers = NULL;
	CURL	   *easy = kling_s3_unconfigured() ? NULL : kling_http_easy();

	if (headers == NULL)
		headers = curl_slist_append(NULL, "x-amz-content-sha256: "
									"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	if (easy != NULL)
	{
		kling_s3_setup(easy, key, headers);
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, "DELETE");
		curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) kling_request_timeout_ms);
	}
	return kling_http_start_transfer(easy, owner);
}

/* The upload is done: decide what it came to. */
void
kling_upload_finished(KlingDownload *d)
{
	KlingHttpRequest *req = d->request;
	const char *failure = kling_http_failure(req);

	if (failure != NULL)
		d->outcome = KLING_FETCH_RETRY,
			d->error = psprintf("upload to kling.s3_endpoint failed: %s", failure);
	else if (req->http_status / 100 != 2)
		d->outcome = kling_status_is_transient(req->http_status) ? KLING_FETCH_RETRY : KLING_FETCH_REFUSED,
			d->error = psprintf("the S3 service refused the upload (HTTP %ld); check kling.s3_* settings",
								req->http_status);
	else
		d->outcome = KLING_FETCH_DONE;
	kling_http_free(req);
	d->request = NULL;
}
