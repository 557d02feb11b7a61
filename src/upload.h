/*-------------------------------------------------------------------------
 *
 * upload.h
 *		Uploading a fetched video to an S3-compatible bucket.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_UPLOAD_H
#define KLING_UPLOAD_H

#include "download.h"

extern const char *kling_s3_unconfigured(void);
extern void kling_upload_start(KlingDownload *d);
extern void kling_upload_finished(KlingDownload *d);
extern KlingHttpRequest *kling_s3_delete_start(const char *key, void *owner);

#endif							/* KLING_UPLOAD_H */
