/*-------------------------------------------------------------------------
 *
 * images.c
 *		Images given to image-to-video models.
 *
 * The provider takes an image as an http(s) URL or as a base64 data URL
 * of a PNG, JPEG or WebP file of at most 10 MB.  Both are checked before a
 * task is enqueued, so that a bad image fails at submit, not minutes later
 * at the provider; a bytea column's image is sent as a data URL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/base64.h"
#include "lib/stringinfo.h"
#if PG_VERSION_NUM >= 160000
#include "varatt.h"
#endif

#include "images.h"

#define KLING_IMAGE_HINT \
	"Use an http(s) URL or a base64 data URL of a PNG, JPEG or WebP image, such as \"data:image/png;base64,iVBORw0...\"."

typedef struct KlingImageType
{
	const char *mime;
	const char *magic;
	int			magic_len;
	int			magic_offset;
} KlingImageType;

static const KlingImageType kling_image_types[] = {
	{"image/png", "\x89PNG\r\n\x1a\n", 8, 0},
	{"image/jpeg", "\xff\xd8\xff", 3, 0},
	{"image/webp", "WEBP", 4, 8},	/* after "RIFF" and a length */
};

/* The type of an image by its first bytes, or NULL. */
static const KlingImageType *
kling_image_type_of(const char *bytes, int len)
{
	for (int i = 0; i < (int) lengthof(kling_image_types); i++)
	{
		const KlingImageType *t = &kling_image_types[i];

		if (len >= t->magic_offset + t->magic_len &&
			memcmp(bytes + t->magic_offset, t->magic, t->magic_len) == 0)
			return t;
	}
	return NULL;
}

static void
kling_image_error(const char *option, const char *why)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"%s\": %s", option, why),
			 errhint(KLING_IMAGE_HINT)));
}

/* Whether a string starts with a prefix, ignoring ASCII case. */
static bool
kling_has_prefix(const char *s, int len, const char *prefix)
{
	int			n = strlen(prefix);

	return len >= n && pg_strncasecmp(s, prefix, n) == 0;
}

/* An http(s) URL: a host, no spaces or control characters, not too long. */
static void
kling_check_image_url(const char *option, const char *s, int len)
{
	int			start = kling_has_prefix(s, len, "https://") ? 8 : 7;

	if (len > KLING_MAX_IMAGE_URL_BYTES)
		kling_image_error(option, psprintf("the URL is longer than %d bytes",
										   KLING_MAX_IMAGE_URL_BYTES));
	if (len == start || s[start] == '/' || s[start] == '?' || s[start] == '#')
		kling_image_error(option, "the URL names no host");
	for (int i = 0; i < len; i++)
		if ((unsigned char) s[i] <= 0x20 || s[i] == 0x7f)
			kling_image_error(option, "the URL contains a space or a control character");
}

/* A data URL: an image type, base64 data, a size within the limit. */
static void
kling_check_data_url(const char *option, const char *s, int len)
{
	const char *comma = memchr(s, ',', len);
	const char *data;
	int			data_len;
	int			padding = 0;
	const KlingImageType *declared = NULL;
	char		head[12];
	int			head_len;

	if (comma == NULL || comma - s < 12 || !kling_has_prefix(comma - 7, 7, ";base64"))
		kling_image_error(option, "a data URL must be base64, as \"data:image/png;base64,...\"");
	for (int i = 0; i < (int) lengthof(kling_image_types); i++)
		if (comma - 7 - (s + 5) == (ptrdiff_t) strlen(kling_image_types[i].mime) &&
			kling_has_prefix(s + 5, len - 5, kling_image_types[i].mime))
			declared = &kling_image_types[i];
	if (declared == NULL)
		kling_image_error(option, "the data URL is not of type image/png, image/jpeg or image/webp");

	data = comma + 1;
	data_len = len - (data - s);
	if (data_len == 0 || data_len % 4 != 0)
		kling_image_error(option, "the data URL's base64 data is empty or cut short");
	for (int i = 0; i < data_len; i++)
	{
		char		c = data[i];

		if (c == '=' && i >= data_len - 2)
			padding++;
		else if (!(isalnum((unsigned char) c) || c == '+' || c == '/') || padding > 0)
			kling_image_error(option, "the data URL's data is not base64");
	}
	if ((int64) data_len / 4 * 3 - padding > KLING_MAX_IMAGE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": the image is larger than 10 MB", option),
				 errdetail("It has %lld bytes; the provider takes at most %d.",
						   (long long) data_len / 4 * 3 - padding, KLING_MAX_IMAGE_BYTES)));

	head_len = pg_b64_decode(data, Min(data_len, 16), (void *) head, sizeof(head));
	if (head_len < 0 || kling_image_type_of(head, head_len) != declared)
		kling_image_error(option, psprintf("the data is not an image of type %s", declared->mime));
}

/*
 * Check an image option's value: an http(s) URL or a data URL.  Errors
 * name the option.
 */
void
kling_check_image(const char *option, const char *value, int len)
{
	if (kling_has_prefix(value, len, "http://") || kling_has_prefix(value, len, "https://"))
		kling_check_image_url(option, value, len);
	else if (kling_has_prefix(value, len, "data:"))
		kling_check_data_url(option, value, len);
	else
		kling_image_error(option, "it is neither an http(s) URL nor a data URL");
}

/*
 * A bytea image as a data URL, its type read from its first bytes.  Too
 * large or not an image: an error naming the column.
 */
char *
kling_image_data_url(bytea *image, const char *column)
{
	const char *bytes = VARDATA_ANY(image);
	int			len = VARSIZE_ANY_EXHDR(image);
	const KlingImageType *type = kling_image_type_of(bytes, len);
	StringInfoData buf;
	int			encoded;

	if (len > KLING_MAX_IMAGE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the image in column \"%s\" is larger than 10 MB", column),
				 errdetail("It has %d bytes; the provider takes at most %d.",
						   len, KLING_MAX_IMAGE_BYTES),
				 errhint("Store a smaller image, or an https URL of it in a text column.")));
	if (type == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the value in column \"%s\" is not a PNG, JPEG or WebP image", column),
				 errhint("The provider takes PNG, JPEG and WebP images.")));

	initStringInfo(&buf);
	appendStringInfo(&buf, "data:%s;base64,", type->mime);
	enlargeStringInfo(&buf, pg_b64_enc_len(len) + 1);
	encoded = pg_b64_encode((const void *) bytes, len, buf.data + buf.len, buf.maxlen - buf.len);
	if (encoded < 0)
		elog(ERROR, "could not encode the image in column \"%s\" as base64", column);
	buf.len += encoded;
	buf.data[buf.len] = '\0';
	return buf.data;
}
