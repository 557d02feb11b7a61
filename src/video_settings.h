/*-------------------------------------------------------------------------
 *
 * video_settings.h
 *		The settings of kept videos: whether, where, how large, from where.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_VIDEO_SETTINGS_H
#define KLING_VIDEO_SETTINGS_H

/* Where kept videos go (kling.storage). */
typedef enum KlingStorage
{
	KLING_STORAGE_DATABASE,		/* large objects, listed in kling_videos */
	KLING_STORAGE_S3			/* an S3-compatible bucket */
} KlingStorage;

extern bool kling_keep_videos;
extern int	kling_storage;
extern int	kling_max_video_size_kb;
extern bool kling_download_allow_private;
extern char *kling_s3_endpoint;
extern char *kling_s3_bucket;
extern char *kling_s3_region;
extern char *kling_s3_access_key;
extern char *kling_s3_secret_key;

extern void kling_define_video_settings(void);
extern int64 kling_max_video_bytes(void);

#endif							/* KLING_VIDEO_SETTINGS_H */
