/*-------------------------------------------------------------------------
 *
 * trigger.c
 *		kling_on_insert: a BEFORE INSERT trigger that makes a task for every
 *		row inserted into a user's table, and puts the task's id in the row.
 *
 * Used as
 *
 *	 CREATE TRIGGER scenes_video BEFORE INSERT ON scenes FOR EACH ROW
 *	   EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url',
 *										'{"duration": 5}', 'opts', 'skip');
 *
 * with arguments: the prompt column; the bigint column that receives the
 * task id; the text column the worker writes the video URL into; optional
 * opts for every row; optionally a jsonb column whose value, when not NULL,
 * is merged over them; what to do with a row without what its model needs
 * (a prompt, or the image): 'error' (the default) or 'skip' (the row is
 * inserted without a task); optionally the column holding the image of an
 * image-to-video model: a text URL, or bytea sent as a data URL; and
 * optionally the column the kept video is written into: bytea for the
 * bytes (kling.storage = database), text for the object key (s3).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "cluster.h"
#include "images.h"
#include "options.h"
#include "sql_api.h"

PG_FUNCTION_INFO_V1(kling_on_insert);

static int	kling_column(Relation rel, const char *name, const Oid *types,
						 const char *type_names);
static void kling_trigger_context(void *arg);

/* Usage, for hints. */
#define KLING_TRIGGER_USAGE \
	"Use kling_on_insert('prompt_column', 'task_id_column', 'video_url_column' [, 'opts' [, 'opts_column' [, 'error' | 'skip' [, 'image_column' [, 'video_column']]]]])."

/*
 * The attribute number of a column of the given types, or an error that
 * says what is wrong.
 */
static int
kling_column(Relation rel, const char *name, const Oid *types,
			 const char *type_names)
{
	TupleDesc	desc = RelationGetDescr(rel);
	int			attnum = SPI_fnumber(desc, name);
	Oid			type;

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						name, RelationGetRelationName(rel)),
				 errhint(KLING_TRIGGER_USAGE)));

	type = TupleDescAttr(desc, attnum - 1)->atttypid;
	for (const Oid *t = types; *t != InvalidOid; t++)
		if (type == *t)
			return attnum;
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("column \"%s\" of relation \"%s\" must be of type %s",
					name, RelationGetRelationName(rel), type_names),
			 errdetail("It is of type %s.", format_type_be(type))));
	pg_unreachable();
}

/* Error context: which trigger and table an error came from. */
static void
kling_trigger_context(void *arg)
{
	TriggerData *trigdata = (TriggerData *) arg;

	errcontext("kling_on_insert trigger \"%s\" on table \"%s\"",
			   trigdata->tg_trigger->tgname,
			   RelationGetRelationName(trigdata->tg_relation));
}

/* The trigger's arguments, read and checked against its table. */
typedef struct KlingTriggerArgs
{
	int			prompt_col;
	int			id_col;
	Jsonb	   *opts;			/* fixed options merged with the row's, or NULL */
	bool		skip_missing;
	bool		image_missing;	/* an image column is named, and NULL here */
	const char *video_column;	/* where the kept video goes, or NULL */
} KlingTriggerArgs;

/*
 * The image in the row's image column as opts' "image_url": text as it
 * is, bytea as a data URL.  NULL when the row has none.
 */
static Jsonb *
kling_image_opts(Relation rel, HeapTuple tuple, const char *column)
{
	static const Oid image_types[] = {TEXTOID, VARCHAROID, BYTEAOID, InvalidOid};
	int			col = kling_column(rel, column, image_types, "text, varchar or bytea");
	bool		isnull;
	Datum		value = heap_getattr(tuple, col, RelationGetDescr(rel), &isnull);
	StringInfoData buf;

	if (isnull)
		return NULL;
	initStringInfo(&buf);
	appendStringInfoString(&buf, "{\"image_url\": ");
	if (TupleDescAttr(RelationGetDescr(rel), col - 1)->atttypid == BYTEAOID)
		escape_json(&buf, kling_image_data_url(DatumGetByteaPP(value), column));
	else
		escape_json(&buf, TextDatumGetCString(value));
	appendStringInfoChar(&buf, '}');
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(buf.data)));
}

/* Options merged: the later's keys win; either may be NULL. */
static Jsonb *
kling_merge_opts(Jsonb *base, Jsonb *over)
{
	if (base == NULL || over == NULL)
		return base ? base : over;
	return DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(base),
											  JsonbPGetDatum(over)));
}

/* Read the trigger's arguments for this row. */
static void
kling_trigger_args(Relation rel, HeapTuple tuple, char **args, int nargs,
				   KlingTriggerArgs *out)
{
	static const Oid text_types[] = {TEXTOID, VARCHAROID, InvalidOid};
	static const Oid id_types[] = {INT8OID, InvalidOid};
	static const Oid jsonb_types[] = {JSONBOID, InvalidOid};

	if (nargs < 3 || nargs > 8)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kling_on_insert() takes 3 to 8 arguments, got %d", nargs),
				 errhint(KLING_TRIGGER_USAGE)));

	memset(out, 0, sizeof(*out));
	out->prompt_col = kling_column(rel, args[0], text_types, "text or varchar");
	out->id_col = kling_column(rel, args[1], id_types, "bigint");
	(void) kling_column(rel, args[2], text_types, "text or varchar");

	if (nargs > 3 && args[3][0] != '\0')
		out->opts = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(args[3])));
	if (nargs > 4 && args[4][0] != '\0')
	{
		int			opts_col = kling_column(rel, args[4], jsonb_types, "jsonb");
		bool		isnull;
		Datum		value = heap_getattr(tuple, opts_col, RelationGetDescr(rel), &isnull);

		if (!isnull)
			out->opts = kling_merge_opts(out->opts, DatumGetJsonbP(value));
	}
	if (nargs > 5)
	{
		if (strcmp(args[5], "skip") == 0)
			out->skip_missing = true;
		else if (strcmp(args[5], "error") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid value for on_missing_prompt: \"%s\"", args[5]),
					 errhint("Use \"error\" or \"skip\".")));
	}
	if (nargs > 6 && args[6][0] != '\0')
	{
		Jsonb	   *image = kling_image_opts(rel, tuple, args[6]);

		out->image_missing = (image == NULL);
		out->opts = kling_merge_opts(out->opts, image);
	}
	if (nargs > 7 && args[7][0] != '\0')
	{
		static const Oid video_types[] = {BYTEAOID, TEXTOID, VARCHAROID, InvalidOid};

		(void) kling_column(rel, args[7], video_types, "bytea, text or varchar");
		out->video_column = args[7];
	}
}

/*
 * kling_on_insert() RETURNS trigger
 */
Datum
kling_on_insert(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	ErrorContextCallback errcallback;
	Relation	rel;
	HeapTuple	tuple;
	KlingTriggerArgs a;
	Datum		value;
	bool		isnull;
	text	   *prompt;
	bool		need_prompt;
	KlingTarget target;
	Datum		id;
	bool		id_null = false;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kling_on_insert() can only be called as a trigger")));
	if (!TRIGGER_FIRED_BEFORE(trigdata->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("kling_on_insert() must be fired BEFORE INSERT FOR EACH ROW")));

	errcallback.callback = kling_trigger_context;
	errcallback.arg = trigdata;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	rel = trigdata->tg_relation;
	tuple = trigdata->tg_trigtuple;
	kling_trigger_args(rel, tuple, trigdata->tg_trigger->tgargs,
					   trigdata->tg_trigger->tgnargs, &a);

	value = heap_getattr(tuple, a.prompt_col, RelationGetDescr(rel), &isnull);
	prompt = isnull ? NULL : DatumGetTextPP(value);
	need_prompt = kling_opts_need_prompt(a.opts);
	if (a.skip_missing &&
		(a.image_missing ||
		 (need_prompt && (prompt == NULL ||
						  kling_prompt_is_blank(VARDATA_ANY(prompt), VARSIZE_ANY_EXHDR(prompt))))))
	{
		error_context_stack = errcallback.previous;
		return PointerGetDatum(tuple);
	}
	/* A model that needs no prompt takes a row without one as it is. */
	if (prompt == NULL && !need_prompt)
		prompt = cstring_to_text("");

	/* On a Citus shard: the distributed table, wherever the shard moves. */
	target.table = kling_cluster_logical_table(rel);
	target.id_column = trigdata->tg_trigger->tgargs[1];
	target.url_column = trigdata->tg_trigger->tgargs[2];
	target.video_column = a.video_column;
	id = Int64GetDatum(kling_enqueue(prompt, a.opts, &target));

	error_context_stack = errcallback.previous;
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, RelationGetDescr(rel),
													 1, &a.id_col, &id, &id_null));
}
