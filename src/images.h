/*-------------------------------------------------------------------------
 *
 * images.h
 *		Images given to image-to-video models: URLs, data URLs, and bytea
 *		values turned into data URLs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef KLING_IMAGES_H
#define KLING_IMAGES_H

/* The provider refuses larger images. */
#define KLING_MAX_IMAGE_BYTES (10 * 1024 * 1024)
/* Longer http(s) URLs are refused; signed URLs fit well within it. */
#define KLING_MAX_IMAGE_URL_BYTES 8192

extern void kling_check_image(const char *option, const char *value, int len);
extern char *kling_image_data_url(bytea *image, const char *column);

#endif							/* KLING_IMAGES_H */
