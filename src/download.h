/*-------------------------------------------------------------------------
 *
 * download.h
 *		Fetching a completed video into a temporary file, in the worker's
 *		curl multi loop, with bounded memory and no trust in the URL.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_DOWNLOAD_H
#define KLING_DOWNLOAD_H

#include "common/cryptohash.h"

#include "http.h"

typedef enum KlingFetchOutcome
{
	KLING_FETCH_RUNNING,
	KLING_FETCH_DONE,			/* the whole file is in path */
	KLING_FETCH_RETRY,			/* a transient failure: try again later */
	KLING_FETCH_REFUSED			/* never kept: error says why */
} KlingFetchOutcome;

typedef struct KlingDownload
{
	int64		task_id;
	int			attempts;		/* transient failures before this one */
	char		path[MAXPGPATH];
	int			fd;
	int64		size;
	int64		limit;
	pg_cryptohash_ctx *sha;
	char		sha256[65];		/* hex, once done */
	char		content_type[128];
	bool		too_large;
	bool		write_failed;
	const char *refused;		/* the address or scheme the guard refused */
	KlingHttpRequest *request;
	KlingFetchOutcome outcome;
	char	   *error;

	/* With kling.storage = s3: the upload that follows the download. */
	bool		uploading;
	char		key[64];		/* the object key */
	int64		sent;			/* bytes read for the upload so far */
	struct curl_slist *upload_headers;
} KlingDownload;

extern KlingDownload *kling_download_start(int64 task_id, const char *url, int attempts);
extern void kling_download_finished(KlingDownload *d);
extern void kling_download_discard(KlingDownload *d);
extern bool kling_address_is_private(const struct sockaddr *addr);
extern bool kling_status_is_transient(long status);

#endif							/* KLING_DOWNLOAD_H */
