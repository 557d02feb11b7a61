/*-------------------------------------------------------------------------
 *
 * options.c
 *		Validation and normalization of a task's prompt and options.
 *
 * One table lists every option a task accepts: its type, its allowed
 * values, its default, and whether it goes into the provider's create body.
 * Anything else is an error that names the key and lists what is allowed,
 * so that nothing is enqueued that the provider would refuse or that would
 * silently be dropped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/dependency.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "commands/extension.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "compat.h"
#include "images.h"
#include "models.h"
#include "options.h"
#include "subxact.h"
#include "video_settings.h"

typedef enum KlingOptionKind
{
	KLING_OPT_MODEL,			/* a model of models.c */
	KLING_OPT_CHOICE,			/* a string from a fixed list */
	KLING_OPT_TEXT,				/* a string of limited length */
	KLING_OPT_DURATION,			/* 5 or 10, given as a number or a string */
	KLING_OPT_UNIT_NUMBER,		/* a number from 0 to 1 */
	KLING_OPT_BOOLEAN,			/* true or false */
	KLING_OPT_IMAGE,			/* an http(s) URL or a data URL of an image */
	KLING_OPT_MASKS,			/* dynamic masks: images with trajectories */
	KLING_OPT_ANY,				/* any JSON value but null */
	KLING_OPT_CALLBACK			/* a function taking a kling_tasks row */
} KlingOptionKind;

typedef struct KlingOption
{
	const char *name;
	KlingOptionKind kind;
	uint32		field;			/* its bit in a model's rules; 0: the extension's own */
	const char *const *choices; /* for KLING_OPT_CHOICE */
	const char *default_json;	/* filled in when absent and the model takes it */
} KlingOption;

static const char *const kling_aspect_ratios[] = {"16:9", "9:16", "1:1", NULL};

static const char *const kling_camera_controls[] = {
	"down_back", "forward_up", "right_turn_forward", "left_turn_forward", NULL
};

/* Every option of every model; a model's rules say which it takes. */
static const KlingOption kling_options[] = {
	{"model", KLING_OPT_MODEL, 0, NULL, "\"" KLING_DEFAULT_MODEL "\""},
	{"image_url", KLING_OPT_IMAGE, KLING_F_IMAGE_URL, NULL, NULL},
	{"tail_image_url", KLING_OPT_IMAGE, KLING_F_TAIL_IMAGE_URL, NULL, NULL},
	{"negative_prompt", KLING_OPT_TEXT, KLING_F_NEGATIVE_PROMPT, NULL, NULL},
	{"aspect_ratio", KLING_OPT_CHOICE, KLING_F_ASPECT_RATIO, kling_aspect_ratios, "\"16:9\""},
	{"duration", KLING_OPT_DURATION, KLING_F_DURATION, NULL, "5"},
	{"cfg_scale", KLING_OPT_UNIT_NUMBER, KLING_F_CFG_SCALE, NULL, NULL},
	{"camera_control", KLING_OPT_CHOICE, KLING_F_CAMERA_CONTROL, kling_camera_controls, NULL},
	{"external_task_id", KLING_OPT_TEXT, KLING_F_EXTERNAL_TASK_ID, NULL, NULL},
	{"generate_audio", KLING_OPT_BOOLEAN, KLING_F_GENERATE_AUDIO, NULL, "true"},
	{"static_mask", KLING_OPT_IMAGE, KLING_F_STATIC_MASK, NULL, NULL},
	{"dynamic_masks", KLING_OPT_MASKS, KLING_F_DYNAMIC_MASKS, NULL, NULL},
	{"keep", KLING_OPT_BOOLEAN, 0, NULL, NULL},
	{"context", KLING_OPT_ANY, 0, NULL, NULL},
	{"callback", KLING_OPT_CALLBACK, 0, NULL, NULL},
};

#define KLING_NUM_OPTIONS ((int) lengthof(kling_options))

/* The provider's limits on dynamic masks. */
#define KLING_MAX_MASKS 6
#define KLING_MIN_TRAJECTORY 2
#define KLING_MAX_TRAJECTORY 77

/* Nesting allowed in the user's own "context" value. */
#define KLING_MAX_CONTEXT_DEPTH 100

static const KlingOption *kling_find_option(const char *name);
static char *kling_option_names(const KlingModel *model);
static char *kling_choice_list(const char *const *choices);
static const char *kling_json_type_name(const JsonbValue *v);
static void kling_wrong_type(const char *name, const char *wanted, const JsonbValue *v,
							 const char *hint);
static char *kling_json_value_text(const JsonbValue *v);
static char *kling_normalize_value(const KlingOption *opt, const JsonbValue *v);
static int	kling_numeric_cmp(const JsonbValue *v, int64 n);
static int	kling_json_depth(const JsonbValue *v, int limit);
static Oid	kling_lookup_function(const char *signature, char **why);
static bool kling_is_task_row_type(Oid type);
static char *kling_normalize_callback(const KlingOption *opt, const JsonbValue *v);
static void kling_append_options(StringInfo buf, const KlingModel *model,
								 char *const *normalized);

/*
 * Whether a character shows nothing: white space (Unicode's too), control
 * characters, and the zero-width ones.
 */
static bool
kling_is_invisible(pg_wchar c)
{
	return c <= 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad ||
		c == 0x1680 || (c >= 0x2000 && c <= 0x200f) ||
		(c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) ||
		c == 0x3000 || c == 0xfeff;
}

/* Whether a prompt has no visible character. */
bool
kling_prompt_is_blank(const char *s, int len)
{
	pg_wchar   *chars = palloc((len + 1) * sizeof(pg_wchar));
	int			nchars = pg_mb2wchar_with_len(s, chars, len);
	bool		blank = true;

	for (int i = 0; i < nchars && blank; i++)
		blank = kling_is_invisible(chars[i]);
	pfree(chars);
	return blank;
}

/*
 * Check the prompt: present, within the provider's limit, and not blank
 * for a model that requires one.
 */
static void
kling_check_prompt(text *prompt, const KlingModel *model)
{
	int			nchars;

	if (prompt == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("prompt must not be null"),
				 (model->required & KLING_F_PROMPT) ? 0 :
				 errhint("Model \"%s\" needs no prompt: pass an empty string.", model->name)));

	if ((model->required & KLING_F_PROMPT) &&
		kling_prompt_is_blank(VARDATA_ANY(prompt), VARSIZE_ANY_EXHDR(prompt)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prompt must not be empty"),
				 errdetail("The prompt describes the video; it needs at least one visible character.")));

	nchars = pg_mbstrlen_with_len(VARDATA_ANY(prompt), VARSIZE_ANY_EXHDR(prompt));
	if (nchars > KLING_MAX_PROMPT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("prompt is too long"),
				 errdetail("The prompt has %d characters; the limit is %d.",
						   nchars, KLING_MAX_PROMPT_CHARS)));
}

/* The model opts name (or the default), or an error naming "model". */
static const KlingModel *
kling_model_of(Jsonb *opts)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&opts->root, "model", 5, NULL);
	const KlingModel *model;
	char	   *name;

	if (v == NULL)
		return kling_default_model();
	if (v->type != jbvString)
		kling_wrong_type("model", "a string", v,
						 psprintf("Known models are: %s.", kling_model_names()));
	name = pnstrdup(v->val.string.val, v->val.string.len);
	model = kling_find_model(name);
	if (model == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown model \"%s\"", name),
				 errhint("Known models are: %s.", kling_model_names())));
	return model;
}

/* Whether the model opts name requires a prompt (an unknown one: yes). */
bool
kling_opts_need_prompt(Jsonb *opts)
{
	JsonbValue *v;
	const KlingModel *model = kling_default_model();

	if (opts != NULL && JB_ROOT_IS_OBJECT(opts) &&
		(v = getKeyJsonValueFromContainer(&opts->root, "model", 5, NULL)) != NULL)
		model = v->type == jbvString
			? kling_find_model(pnstrdup(v->val.string.val, v->val.string.len))
			: NULL;
	return model == NULL || (model->required & KLING_F_PROMPT);
}

/*
 * Whether the video is kept: opts.keep, else kling.keep_videos.  Stored
 * only when true, so that the options of tasks that keep nothing read as
 * they always did.
 */
static void
kling_normalize_keep(char **keep)
{
	bool		wanted = *keep ? strcmp(*keep, "true") == 0 : kling_keep_videos;

	*keep = wanted ? pstrdup("true") : NULL;
}

/* Whether a model takes an option. */
static bool
kling_model_takes(const KlingModel *model, const KlingOption *opt)
{
	return opt->field == 0 || (model->accepted & opt->field);
}

/*
 * Validate a task's prompt and options for its model, and return the
 * options normalized: every given key checked, defaults filled in,
 * durations stored as integers.  Any problem is an ERROR naming the key;
 * those about the model's rules have a hint listing what it takes.
 */
Jsonb *
kling_normalize_request(text *prompt, Jsonb *opts)
{
	char	   *normalized[KLING_NUM_OPTIONS] = {0};
	const KlingModel *model;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	StringInfoData buf;

	if (!JB_ROOT_IS_OBJECT(opts))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("opts must be a JSON object"),
				 errdetail("Got a JSON %s.",
						   JB_ROOT_IS_SCALAR(opts) ? "scalar" : "array"),
				 errhint("Pass options as an object, for example '{\"duration\": 10}'.")));

	model = kling_model_of(opts);
	kling_check_prompt(prompt, model);

	/* No options, the common case: the defaults, built once per backend. */
	if (JB_ROOT_COUNT(opts) == 0 && !kling_keep_videos)
	{
		static Jsonb *defaults = NULL;

		if (defaults == NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

			initStringInfo(&buf);
			kling_append_options(&buf, model, normalized);
			defaults = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
			MemoryContextSwitchTo(old);
		}
		return defaults;
	}

	it = JsonbIteratorInit(&opts->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		const KlingOption *opt;
		char	   *key;

		if (tok != WJB_KEY)
			continue;

		key = pnstrdup(v.val.string.val, v.val.string.len);
		opt = kling_find_option(key);
		if (opt == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown option \"%s\"", key),
					 errhint("Model \"%s\" takes: %s.", model->name, kling_option_names(model))));
		if (!kling_model_takes(model, opt))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("model \"%s\" does not take option \"%s\"", model->name, key),
					 errhint("Model \"%s\" takes: %s.", model->name, kling_option_names(model))));

		tok = JsonbIteratorNext(&it, &v, true);
		Assert(tok == WJB_VALUE);
		normalized[opt - kling_options] = kling_normalize_value(opt, &v);
	}

	kling_normalize_keep(&normalized[kling_find_option("keep") - kling_options]);

	for (int i = 0; i < KLING_NUM_OPTIONS; i++)
		if ((model->required & kling_options[i].field) && normalized[i] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("model \"%s\" requires option \"%s\"", model->name,
							kling_options[i].name),
					 errhint("Model \"%s\" takes: %s.", model->name, kling_option_names(model))));

	initStringInfo(&buf);
	kling_append_options(&buf, model, normalized);
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/*
 * The options as a JSON object: the given values, and the defaults of the
 * others the model takes.
 */
static void
kling_append_options(StringInfo buf, const KlingModel *model, char *const *normalized)
{
	bool		first = true;

	appendStringInfoChar(buf, '{');
	for (int i = 0; i < KLING_NUM_OPTIONS; i++)
	{
		const char *value = normalized[i];

		if (value == NULL && kling_model_takes(model, &kling_options[i]))
			value = kling_options[i].default_json;
		if (value == NULL)
			continue;
		if (!first)
			appendStringInfoString(buf, ", ");
		escape_json(buf, kling_options[i].name);
		appendStringInfo(buf, ": %s", value);
		first = false;
	}
	appendStringInfoChar(buf, '}');
}

/*
 * Whether an option goes into the provider's create body; the others are
 * the extension's own (e.g. the user's "context"), and "model", which the
 * body carries first.
 */
bool
kling_option_is_sent(const char *key)
{
	const KlingOption *opt = kling_find_option(key);

	return opt != NULL && opt->field != 0;
}

/* Look an option up by name. */
static const KlingOption *
kling_find_option(const char *name)
{
	for (int i = 0; i < KLING_NUM_OPTIONS; i++)
		if (strcmp(kling_options[i].name, name) == 0)
			return &kling_options[i];
	return NULL;
}

/* What a model takes, for a hint: the prompt, then its options. */
static char *
kling_option_names(const KlingModel *model)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoString(&buf, (model->required & KLING_F_PROMPT) ? "prompt (required)" : "prompt");
	for (int i = 0; i < KLING_NUM_OPTIONS; i++)
		if (model->accepted & kling_options[i].field)
			appendStringInfo(&buf, ", %s%s", kling_options[i].name,
							 (model->required & kling_options[i].field) ? " (required)" : "");
	appendStringInfoString(&buf, "; and as every task");
	for (int i = 0; i < KLING_NUM_OPTIONS; i++)
		if (kling_options[i].field == 0)
			appendStringInfo(&buf, ", %s", kling_options[i].name);
	return buf.data;
}

/* A list of allowed values, for a hint. */
static char *
kling_choice_list(const char *const *choices)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; choices[i] != NULL; i++)
		appendStringInfo(&buf, "%s\"%s\"", i > 0 ? ", " : "", choices[i]);
	return buf.data;
}

/* The JSON type of a value, for an error detail. */
static const char *
kling_json_type_name(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvBinary:
			return JsonContainerIsObject(v->val.binary.data) ? "object" : "array";
		default:
			return "value";
	}
}

/*
 * An option's value is of the wrong JSON type (v NULL: missing where it
 * must be): an error naming the option, with what it must be.
 */
static void
kling_wrong_type(const char *name, const char *wanted, const JsonbValue *v, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("option \"%s\" must be %s", name, wanted),
			 v ? errdetail("Got a JSON %s.", kling_json_type_name(v)) : 0,
			 hint ? errhint("%s", hint) : 0));
}

/* Any JSON value as JSON text. */
static char *
kling_json_value_text(const JsonbValue *v)
{
	StringInfoData buf;

	switch (v->type)
	{
		case jbvString:
			initStringInfo(&buf);
			escape_json(&buf, pnstrdup(v->val.string.val, v->val.string.len));
			return buf.data;
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			return pstrdup("null");
	}
}

/* Compare a JSON number with an integer, exactly. */
static int
kling_numeric_cmp(const JsonbValue *v, int64 n)
{
	return DatumGetInt32(DirectFunctionCall2(numeric_cmp,
											 NumericGetDatum(v->val.numeric),
											 NumericGetDatum(int64_to_numeric(n))));
}

/* How deeply a JSON value nests, counting up to limit + 1 at most. */
static int
kling_json_depth(const JsonbValue *v, int limit)
{
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int			depth = 0;
	int			deepest = 0;

	if (v->type != jbvBinary)
		return 0;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, false)) != WJB_DONE)
	{
		if (tok == WJB_BEGIN_ARRAY || tok == WJB_BEGIN_OBJECT)
			deepest = Max(deepest, ++depth);
		else if (tok == WJB_END_ARRAY || tok == WJB_END_OBJECT)
			depth--;
		if (deepest > limit)
			break;
	}
	return deepest;
}

/* A choice option: one of its allowed strings. */
static char *
kling_normalize_choice(const KlingOption *opt, const JsonbValue *v)
{
	char	   *s;

	if (v->type != jbvString)
		kling_wrong_type(opt->name, "a string", v,
						 psprintf("Allowed values are: %s.", kling_choice_list(opt->choices)));
	s = pnstrdup(v->val.string.val, v->val.string.len);
	for (int i = 0; opt->choices[i] != NULL; i++)
		if (strcmp(opt->choices[i], s) == 0)
			return kling_json_value_text(v);
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"%s\": \"%s\"", opt->name, s),
			 errhint("Allowed values are: %s.", kling_choice_list(opt->choices))));
	pg_unreachable();
}

/* A text option: a string no longer than a prompt. */
static char *
kling_normalize_text(const KlingOption *opt, const JsonbValue *v)
{
	int			nchars;

	if (v->type != jbvString)
		kling_wrong_type(opt->name, "a string", v, NULL);
	nchars = pg_mbstrlen_with_len(v->val.string.val, v->val.string.len);
	if (nchars > KLING_MAX_PROMPT_CHARS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" is too long", opt->name),
				 errdetail("It has %d characters; the limit is %d.",
						   nchars, KLING_MAX_PROMPT_CHARS)));
	return kling_json_value_text(v);
}

/* The duration: 5 or 10, as a number or a string. */
static char *
kling_normalize_duration(const KlingOption *opt, const JsonbValue *v)
{
	if (v->type == jbvString)
	{
		char	   *s = pnstrdup(v->val.string.val, v->val.string.len);

		if (strcmp(s, "5") == 0 || strcmp(s, "10") == 0)
			return s;
	}
	else if (v->type == jbvNumeric)
	{
		if (kling_numeric_cmp(v, 5) == 0)
			return pstrdup("5");
		if (kling_numeric_cmp(v, 10) == 0)
			return pstrdup("10");
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"%s\": %s",
					opt->name, kling_json_value_text(v)),
			 errhint("Allowed values are 5 and 10 (seconds).")));
	pg_unreachable();
}

/* A number from 0 to 1. */
static char *
kling_normalize_unit_number(const KlingOption *opt, const JsonbValue *v)
{
	if (v->type != jbvNumeric)
		kling_wrong_type(opt->name, "a number", v, "Use a number from 0 to 1.");
	if (kling_numeric_cmp(v, 0) < 0 || kling_numeric_cmp(v, 1) > 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" is out of range: %s",
						opt->name, kling_json_value_text(v)),
				 errhint("Use a number from 0 to 1.")));
	return kling_json_value_text(v);
}

/* A boolean, sent as one. */
static char *
kling_normalize_boolean(const KlingOption *opt, const JsonbValue *v)
{
	if (v->type != jbvBool)
		kling_wrong_type(opt->name, "a boolean", v, "Use true or false.");
	return kling_json_value_text(v);
}

/* An image: an http(s) URL or a data URL. */
static char *
kling_normalize_image(const char *name, const JsonbValue *v)
{
	if (v == NULL || v->type != jbvString)
		kling_wrong_type(name, "a string", v,
						 "Use an http(s) URL or a base64 data URL of a PNG, JPEG or WebP image.");
	kling_check_image(name, v->val.string.val, v->val.string.len);
	return kling_json_value_text(v);
}

/* An error about the shape of dynamic masks. */
static void
kling_masks_error(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid value for option \"dynamic_masks\": %s", what),
			 errhint("Use an array of up to %d objects {\"mask\": image URL, \"trajectories\": [{\"x\": 1, \"y\": 2}, ...]}, each with %d to %d points.",
					 KLING_MAX_MASKS, KLING_MIN_TRAJECTORY, KLING_MAX_TRAJECTORY)));
}

/* The JSON array or object a value holds, or NULL. */
static JsonbContainer *
kling_container(const JsonbValue *v, bool array)
{
	if (v == NULL || v->type != jbvBinary ||
		(array ? !JsonContainerIsArray(v->val.binary.data)
		 : !JsonContainerIsObject(v->val.binary.data)))
		return NULL;
	return v->val.binary.data;
}

/* Whether a value is an integral JSON number. */
static bool
kling_is_integer(const JsonbValue *v)
{
	return v != NULL && v->type == jbvNumeric &&
		strchr(kling_json_value_text(v), '.') == NULL;
}

/* One dynamic mask: an image and the path (points) it moves along. */
static void
kling_check_mask(JsonbContainer *mask, int index)
{
	JsonbContainer *points = NULL;
	int			npoints;

	if (JsonContainerSize(mask) != 2 ||
		(points = kling_container(getKeyJsonValueFromContainer(mask, "trajectories", 12, NULL), true)) == NULL)
		kling_masks_error(psprintf("mask %d must have exactly the keys \"mask\" and \"trajectories\"", index + 1));
	(void) kling_normalize_image(psprintf("dynamic_masks (mask %d)", index + 1),
								 getKeyJsonValueFromContainer(mask, "mask", 4, NULL));

	npoints = JsonContainerSize(points);
	if (npoints < KLING_MIN_TRAJECTORY || npoints > KLING_MAX_TRAJECTORY)
		kling_masks_error(psprintf("mask %d has %d trajectory points", index + 1, npoints));
	for (int i = 0; i < npoints; i++)
	{
		JsonbContainer *point = kling_container(getIthJsonbValueFromContainer(points, i), false);

		if (point == NULL || JsonContainerSize(point) != 2 ||
			!kling_is_integer(getKeyJsonValueFromContainer(point, "x", 1, NULL)) ||
			!kling_is_integer(getKeyJsonValueFromContainer(point, "y", 1, NULL)))
			kling_masks_error(psprintf("point %d of mask %d must be {\"x\": integer, \"y\": integer}",
									   i + 1, index + 1));
	}
}

/* Dynamic masks: an array of masks, each checked. */
static char *
kling_normalize_masks(const KlingOption *opt, const JsonbValue *v)
{
	JsonbContainer *masks = kling_container(v, true);
	int			n = masks ? JsonContainerSize(masks) : 0;

	if (masks == NULL || n < 1 || n > KLING_MAX_MASKS)
		kling_masks_error(masks ? psprintf("it has %d masks", n)
						  : psprintf("got a JSON %s", kling_json_type_name(v)));
	for (int i = 0; i < n; i++)
	{
		JsonbContainer *mask = kling_container(getIthJsonbValueFromContainer(masks, i), false);

		if (mask == NULL)
			kling_masks_error(psprintf("mask %d is not an object", i + 1));
		kling_check_mask(mask, i);
	}
	return kling_json_value_text(v);
}

/*
 * Check one option's value and return it as normalized JSON text.
 */
static char *
kling_normalize_value(const KlingOption *opt, const JsonbValue *v)
{
	if (v->type == jbvNull)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("option \"%s\" must not be null", opt->name),
				 errhint("Leave the key out to use its default.")));

	switch (opt->kind)
	{
		case KLING_OPT_MODEL:
			return kling_json_value_text(v);	/* checked first, by kling_model_of */
		case KLING_OPT_BOOLEAN:
			return kling_normalize_boolean(opt, v);
		case KLING_OPT_IMAGE:
			return kling_normalize_image(opt->name, v);
		case KLING_OPT_MASKS:
			return kling_normalize_masks(opt, v);
		case KLING_OPT_CHOICE:
			return kling_normalize_choice(opt, v);
		case KLING_OPT_TEXT:
			return kling_normalize_text(opt, v);
		case KLING_OPT_DURATION:
			return kling_normalize_duration(opt, v);
		case KLING_OPT_UNIT_NUMBER:
			return kling_normalize_unit_number(opt, v);
		case KLING_OPT_ANY:
			if (kling_json_depth(v, KLING_MAX_CONTEXT_DEPTH) > KLING_MAX_CONTEXT_DEPTH)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("option \"%s\" is nested too deeply", opt->name),
						 errdetail("The limit is %d levels of arrays and objects.",
								   KLING_MAX_CONTEXT_DEPTH)));
			return kling_json_value_text(v);
		case KLING_OPT_CALLBACK:
			return kling_normalize_callback(opt, v);
	}
	pg_unreachable();
}

/* A signature to look up, and the function found (InvalidOid: none). */
typedef struct KlingFunctionLookup
{
	const char *signature;
	Oid			fn;
} KlingFunctionLookup;

/*
 * Lookup step: to_regprocedure, called directly because the usual call
 * macros reject a NULL result.  It raises an error for a signature it
 * cannot parse, or a type that does not exist.
 */
static void
kling_lookup_function_step(void *arg)
{
	KlingFunctionLookup *lookup = arg;
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(lookup->signature);
	fcinfo->args[0].isnull = false;
	result = to_regprocedure(fcinfo);
	lookup->fn = fcinfo->isnull ? InvalidOid : DatumGetObjectId(result);
}

/*
 * A function by its signature, or InvalidOid if there is none; *why says
 * what was wrong with a signature that could not even be looked up.
 */
static Oid
kling_lookup_function(const char *signature, char **why)
{
	KlingFunctionLookup lookup = {signature, InvalidOid};

	*why = kling_try_in_subtransaction(kling_lookup_function_step, &lookup);
	return lookup.fn;
}

/*
 * Whether a type is the row type of the extension's own kling_tasks, not of
 * some other table of that name (which its owner could drop under the
 * worker's feet).
 */
static bool
kling_is_task_row_type(Oid type)
{
	Oid			relid = get_typ_typrelid(type);

	return OidIsValid(relid) &&
		strcmp(get_rel_name(relid), "kling_tasks") == 0 &&
		getExtensionOfObject(RelationRelationId, relid) == get_extension_oid("kling", true);
}

/*
 * A callback: the signature of a function the caller may execute that takes
 * one kling_tasks row, as in "my_schema.on_video(kling_tasks)".  Stored
 * schema-qualified so that it means the same function to the worker.
 */
static char *
kling_normalize_callback(const KlingOption *opt, const JsonbValue *v)
{
	char	   *signature;
	char	   *why;
	Oid			fn;
	HeapTuple	tuple;
	Form_pg_proc proc;
	bool		takes_task;
	StringInfoData buf;

	if (v->type != jbvString)
		kling_wrong_type(opt->name, "a string", v,
						 "Name a function and its argument type, for example \"on_video(kling_tasks)\".");

	signature = pnstrdup(v->val.string.val, v->val.string.len);
	fn = kling_lookup_function(signature, &why);
	if (!OidIsValid(fn))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": function %s does not exist",
						opt->name, signature),
				 why ? errdetail("%s", why) : 0,
				 errhint("Name a function and its argument type, for example \"on_video(kling_tasks)\".")));

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn);
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	takes_task = proc->pronargs == 1 && proc->prokind == PROKIND_FUNCTION &&
		kling_is_task_row_type(proc->proargtypes.values[0]);
	ReleaseSysCache(tuple);
	if (!takes_task)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": function %s does not take one kling_tasks row",
						opt->name, signature)));

	if (kling_proc_aclcheck(fn, GetUserId(), ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid value for option \"%s\": permission denied for function %s",
						opt->name, signature)));

	initStringInfo(&buf);
	escape_json(&buf, format_procedure_qualified(fn));
	return buf.data;
}
