/*-------------------------------------------------------------------------
 *
 * models.c
 *		The Kling models the extension knows, as data: a new model is one
 *		entry here (and in the mock), not new code.
 *
 * The rules follow the provider's published schemas.  Image models are
 * served only on the unified route; the seed's text models on both, the
 * one kling.api_route names.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "models.h"
#include "options.h"
#include "settings.h"

/* The seed's text-to-video schema, shared by the older text models. */
#define SEED_TEXT (KLING_F_PROMPT | KLING_F_NEGATIVE_PROMPT | KLING_F_ASPECT_RATIO | \
				   KLING_F_DURATION | KLING_F_CFG_SCALE | KLING_F_CAMERA_CONTROL | \
				   KLING_F_EXTERNAL_TASK_ID)
/* The newer text-to-video schema. */
#define TEXT (KLING_F_PROMPT | KLING_F_NEGATIVE_PROMPT | KLING_F_ASPECT_RATIO | \
			  KLING_F_DURATION | KLING_F_CFG_SCALE)
/* What every image-to-video model takes besides its image. */
#define IMAGE (KLING_F_IMAGE_URL | KLING_F_PROMPT | KLING_F_NEGATIVE_PROMPT | \
			   KLING_F_DURATION | KLING_F_CFG_SCALE)
#define MASKS (KLING_F_STATIC_MASK | KLING_F_DYNAMIC_MASKS)

static const KlingModel kling_models[] = {
	/* The default comes first. */
	{KLING_DEFAULT_MODEL, false, KLING_F_PROMPT, SEED_TEXT},
	{"klingai/v2-master-text-to-video", false, KLING_F_PROMPT, SEED_TEXT},
	{"kling-video/v1.6/standard/text-to-video", false, KLING_F_PROMPT, SEED_TEXT},
	{"kling-video/v1.6/pro/text-to-video", false, KLING_F_PROMPT, SEED_TEXT},
	{"klingai/v2.5-turbo/pro/text-to-video", true, KLING_F_PROMPT, TEXT},
	{"klingai/video-v2-6-pro-text-to-video", true, KLING_F_PROMPT,
	TEXT | KLING_F_GENERATE_AUDIO},
	{"klingai/v2.1-master-image-to-video", true, KLING_F_IMAGE_URL, IMAGE | MASKS},
	{"kling-video/v2.1/pro/image-to-video", true, KLING_F_IMAGE_URL, IMAGE | MASKS},
	{"kling-video/v2.1/standard/image-to-video", true, KLING_F_IMAGE_URL, IMAGE | MASKS},
	{"klingai/v2-master-image-to-video", true, KLING_F_IMAGE_URL, IMAGE | MASKS},
	{"klingai/v2.5-turbo/pro/image-to-video", true,
	KLING_F_IMAGE_URL | KLING_F_PROMPT, IMAGE},
	{"klingai/video-v2-6-pro-image-to-video", true,
	KLING_F_IMAGE_URL | KLING_F_PROMPT,
	IMAGE | KLING_F_GENERATE_AUDIO | KLING_F_TAIL_IMAGE_URL},
	{"kling-video/v1.6/pro/image-to-video", true, KLING_F_IMAGE_URL,
	IMAGE | KLING_F_TAIL_IMAGE_URL},
	{"kling-video/v1/pro/image-to-video", true, KLING_F_IMAGE_URL,
	IMAGE | KLING_F_TAIL_IMAGE_URL},
	{"kling-video/v1/standard/image-to-video", true, KLING_F_IMAGE_URL,
	IMAGE | KLING_F_TAIL_IMAGE_URL},
};

/* A model by its name, or NULL. */
const KlingModel *
kling_find_model(const char *name)
{
	for (int i = 0; i < (int) lengthof(kling_models); i++)
		if (strcmp(kling_models[i].name, name) == 0)
			return &kling_models[i];
	return NULL;
}

/* The model of a task that names none. */
const KlingModel *
kling_default_model(void)
{
	return &kling_models[0];
}

/* Every model's name, quoted, for a hint. */
char *
kling_model_names(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < (int) lengthof(kling_models); i++)
		appendStringInfo(&buf, "%s\"%s\"", i > 0 ? ", " : "", kling_models[i].name);
	return buf.data;
}

/*
 * The route pair a model's tasks are created and polled on.  A name the
 * table does not know (a task stored by an older version) goes where
 * kling.api_route says, as before.
 */
int
kling_model_route(const char *name)
{
	const KlingModel *model = name ? kling_find_model(name) : NULL;

	return model != NULL && model->unified_only ? KLING_ROUTE_UNIFIED : kling_api_route;
}
