/*-------------------------------------------------------------------------
 *
 * keeper.c
 *		Keeping completed videos.
 *
 * A task whose video is kept is marked 'waiting' when it completes.  In
 * its round transaction the worker records what finished fetches came to
 * (the file stored, a retry planned, or a failure that says why) and
 * claims more tasks to fetch; after the commit it starts their downloads
 * and forgets the recorded ones.  A round that rolls back records its
 * fetches again in the next one.
 *
 * A fetched file is stored as a large object, streamed in 1 MB chunks, and
 * listed in kling_videos.  A failure to fetch or store never touches the
 * task's status: it stays completed, with its URL.  Either way the task
 * is then marked for the delivery process: its write-back, callback and
 * announcement wait until its video is kept or known not to be.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>
#include <unistd.h>

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/memutils.h"

#include "download.h"
#include "keeper.h"
#include "plan_cache.h"
#include "settings.h"
#include "subxact.h"
#include "upload.h"
#include "video_settings.h"

/* Stored into the large object a chunk at a time, so much per round. */
#define KLING_STORE_CHUNK (1024 * 1024)
#define KLING_STORE_PER_ROUND (32 * 1024 * 1024)
/* Backoff between tries: doubling from a second, at most five minutes. */
#define KLING_KEEP_FIRST_RETRY_MS 1000
#define KLING_KEEP_MAX_RETRY_MS (300 * 1000)

typedef enum KlingKeepPlanId
{
	KLING_KEEP_CLAIM,
	KLING_KEEP_RETRY,
	KLING_KEEP_FAIL,
	KLING_KEEP_KEPT,
	KLING_KEEP_LO_CREATE,
	KLING_KEEP_LO_PUT,
	KLING_KEEP_ROW,
	KLING_KEEP_PARTIAL,
	KLING_KEEP_DISCARD_PARTIAL,
	KLING_NUM_KEEP_PLANS
} KlingKeepPlanId;

static KlingPlan kling_keep_plans[KLING_NUM_KEEP_PLANS] = {
	/*
	 * The videos waiting to be fetched, those due first: the due ones are
	 * claimed, the first that is not says when to look again.
	 */
	[KLING_KEEP_CLAIM] = {
		"SELECT id, video_url, keep_attempts, video_key, keep_next_at"
		" FROM %1$s"
		" WHERE keep_state = 'waiting' AND status = 'completed' AND video_url IS NOT NULL"
		" AND id <> ALL ($1)"
		" ORDER BY keep_next_at NULLS FIRST, id LIMIT $2",
		2, {INT8ARRAYOID, INT4OID}
	},
	[KLING_KEEP_RETRY] = {
		"UPDATE %1$s SET keep_attempts = $2, keep_next_at = now() + $3 * interval '1 millisecond',"
		" updated_at = now() WHERE id = $1 AND keep_state = 'waiting'",
		3, {INT8OID, INT4OID, INT4OID}
	},
	[KLING_KEEP_FAIL] = {
		"UPDATE %1$s SET keep_state = 'failed', keep_attempts = $2, keep_next_at = NULL,"
		" delivery_pending = true,"
		" delivery_error = coalesce(delivery_error || '; ', '') || 'video not kept: ' || $3,"
		" updated_at = now() WHERE id = $1 AND keep_state = 'waiting'",
		3, {INT8OID, INT4OID, TEXTOID}
	},
	[KLING_KEEP_KEPT] = {
		"UPDATE %1$s SET keep_state = 'kept', keep_next_at = NULL, video_key = $2,"
		" delivery_pending = true, updated_at = now()"
		" WHERE id = $1 AND keep_state = 'waiting'",
		2, {INT8OID, TEXTOID}
	},
	[KLING_KEEP_LO_CREATE] = {
		"SELECT pg_catalog.lo_from_bytea(0, $1)",
		1, {BYTEAOID}
	},
	[KLING_KEEP_LO_PUT] = {
		"SELECT pg_catalog.lo_put($1, $2, $3)",
		3, {OIDOID, INT8OID, BYTEAOID}
	},
	[KLING_KEEP_ROW] = {
		"INSERT INTO %2$s.kling_videos (task_id, owner, data, content_type, size, sha256)"
		" SELECT id, owner, $2, $3, $4, $5 FROM %1$s WHERE id = $1",
		5, {INT8OID, OIDOID, TEXTOID, INT8OID, TEXTOID}
	},

	/*
	 * A file stored over several rounds: its large object is named on the
	 * task until it is whole, so that one left half made (by a crash) is
	 * removed when the task is fetched again.
	 */
	[KLING_KEEP_PARTIAL] = {
		"UPDATE %1$s SET video_key = 'lo:' || $2::text WHERE id = $1 AND keep_state = 'waiting'",
		2, {INT8OID, OIDOID}
	},
	[KLING_KEEP_DISCARD_PARTIAL] = {
		"WITH p AS (SELECT substr(video_key, 4)::oid AS o FROM %1$s"
		"           WHERE id = $1 AND video_key LIKE 'lo:%%'),"
		" u AS (UPDATE %1$s SET video_key = NULL WHERE id = $1 AND video_key LIKE 'lo:%%')"
		" SELECT pg_catalog.lo_unlink(o) FROM p"
		" WHERE EXISTS (SELECT FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = p.o)",
		1, {INT8OID}
	},
};

typedef struct KlingKeep
{
	KlingDownload *download;
	bool		recorded;		/* its outcome is written in this round */
	/* Storing into a large object, over rounds: as committed, and now. */
	Oid			object_committed;
	int64		stored_committed;
	Oid			object;
	int64		stored;
} KlingKeep;

/* One round's step of storing a file. */
typedef struct KlingStoreStep
{
	KlingKeep  *keep;
	int64		budget;			/* bytes this round may still store */
	bool		whole;			/* the file is stored, its row written */
} KlingStoreStep;

typedef struct KlingClaimedKeep
{
	int64		id;
	char	   *url;
	int			attempts;
	bool		partial;		/* a large object of an earlier try is left */
} KlingClaimedKeep;

/* An object of the bucket whose task retention deleted. */
typedef struct KlingObjectDelete
{
	char	   *key;
	KlingHttpRequest *request;	/* NULL until started */
} KlingObjectDelete;

static MemoryContext kling_keep_context = NULL;
static List *kling_keeps = NIL;		/* KlingKeep: running and finished */
static List *kling_claimed = NIL;	/* KlingClaimedKeep: to start at commit */
static List *kling_object_deletes = NIL;	/* KlingObjectDelete */

/* The context downloads live in, across rounds. */
static MemoryContext
kling_keeper_context(void)
{
	if (kling_keep_context == NULL)
		kling_keep_context = AllocSetContextCreate(TopMemoryContext, "kling downloads",
												   ALLOCSET_DEFAULT_SIZES);
	return kling_keep_context;
}

/*
 * The round deletes tasks whose videos are in the bucket: once it commits,
 * delete the objects too.
 */
void
kling_keeper_forget_objects(List *keys)
{
	MemoryContext old = MemoryContextSwitchTo(kling_keeper_context());
	ListCell   *lc;

	foreach(lc, keys)
	{
		KlingObjectDelete *o = palloc0(sizeof(KlingObjectDelete));

		o->key = pstrdup(lfirst(lc));
		kling_object_deletes = lappend(kling_object_deletes, o);
	}
	MemoryContextSwitchTo(old);
}

/* An object delete is done: say so if it failed, and forget it. */
static bool
kling_object_delete_done(KlingHttpRequest *req)
{
	ListCell   *lc;

	foreach(lc, kling_object_deletes)
	{
		KlingObjectDelete *o = lfirst(lc);
		const char *failure;

		if (o->request != req)
			continue;
		failure = kling_http_failure(req);
		if (failure != NULL || req->http_status / 100 != 2)
			ereport(LOG,
					(errmsg("kling: could not delete object \"%s\" of kling.s3_bucket: %s",
							o->key, failure ? failure : psprintf("HTTP %ld", req->http_status))));
		kling_http_free(req);
		pfree(o->key);
		pfree(o);
		kling_object_deletes = foreach_delete_current(kling_object_deletes, lc);
		return true;
	}
	return false;
}

/*
 * A finished request: if it is one of the downloads, uploads or object
 * deletes, note how it ended and return true; else false (a request to the
 * provider).
 */
bool
kling_keeper_take(KlingHttpRequest *req)
{
	ListCell   *lc;

	if (kling_object_delete_done(req))
		return true;

	foreach(lc, kling_keeps)
	{
		KlingKeep  *k = lfirst(lc);

		if (k->download->request == req)
		{
			KlingDownload *d = k->download;
			MemoryContext old = MemoryContextSwitchTo(kling_keeper_context());

			if (d->uploading)
				kling_upload_finished(d);
			else
			{
				kling_download_finished(d);
				if (d->outcome == KLING_FETCH_DONE && kling_storage == KLING_STORAGE_S3)
					kling_upload_start(d);
			}
			MemoryContextSwitchTo(old);
			return true;
		}
	}
	return false;
}

/*
 * Store (more of) a fetched file into its large object, as much as the
 * round's budget allows; once it is whole, list it in kling_videos (its
 * owner is the task's) and mark the task kept.  An error if the task is
 * no longer waiting.
 */
static void
kling_store_step(void *arg)
{
	KlingStoreStep *step = arg;
	KlingKeep  *k = step->keep;
	KlingDownload *d = k->download;
	Datum		values[5];
	bytea	   *chunk = palloc(VARHDRSZ + KLING_STORE_CHUNK);
	ssize_t		n = 0;
	bool		isnull;

	while (k->stored < d->size && step->budget > 0 &&
		   (n = pg_pread(d->fd, VARDATA(chunk), KLING_STORE_CHUNK, k->stored)) > 0)
	{
		SET_VARSIZE(chunk, VARHDRSZ + n);
		if (k->object == InvalidOid)
		{
			values[0] = PointerGetDatum(chunk);
			kling_execute(&kling_keep_plans[KLING_KEEP_LO_CREATE], values, NULL, 0);
			k->object = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
													   SPI_tuptable->tupdesc, 1, &isnull));
			values[0] = Int64GetDatum(d->task_id);
			values[1] = ObjectIdGetDatum(k->object);
			kling_execute(&kling_keep_plans[KLING_KEEP_PARTIAL], values, NULL, 0);
			if (SPI_processed == 0)
				elog(ERROR, "kling task %lld no longer waits for its video", (long long) d->task_id);
		}
		else
		{
			values[0] = ObjectIdGetDatum(k->object);
			values[1] = Int64GetDatum(k->stored);
			values[2] = PointerGetDatum(chunk);
			kling_execute(&kling_keep_plans[KLING_KEEP_LO_PUT], values, NULL, 0);
		}
		SPI_freetuptable(SPI_tuptable);
		k->stored += n;
		step->budget -= n;
		CHECK_FOR_INTERRUPTS();
		kling_http_pump();		/* the other transfers go on meanwhile */
	}
	pfree(chunk);
	if (n < 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read \"%s\": %m", d->path)));
	if (k->stored < d->size && n == 0 && step->budget > 0)
		elog(ERROR, "\"%s\" is shorter than it was fetched", d->path);
	if (k->stored < d->size)
		return;					/* more in the next round */

	values[0] = Int64GetDatum(d->task_id);
	values[1] = ObjectIdGetDatum(k->object);
	values[2] = CStringGetTextDatum(d->content_type);
	values[3] = Int64GetDatum(d->size);
	values[4] = CStringGetTextDatum(d->sha256);
	kling_execute(&kling_keep_plans[KLING_KEEP_ROW], values, NULL, 0);
	values[1] = (Datum) 0;
	kling_execute(&kling_keep_plans[KLING_KEEP_KEPT], values, (char[]) {' ', 'n'}, 0);
	step->whole = true;
}

/* How long to wait before the next try, with jitter. */
static int
kling_keep_backoff_ms(int attempts)
{
	double		ms = KLING_KEEP_FIRST_RETRY_MS * pow(2.0, Min(attempts, 20));

	ms = Min(ms, KLING_KEEP_MAX_RETRY_MS);
	return (int) (ms * (0.8 + 0.4 * pg_prng_double(&pg_global_prng_state)));
}

/*
 * Write what a finished fetch came to; false if a file being stored needs
 * more rounds (the round's *budget is spent).
 */
static bool
kling_record(KlingKeep *k, int64 *budget)
{
	KlingDownload *d = k->download;
	Datum		values[3];
	char	   *error = d->error;

	if (d->outcome == KLING_FETCH_DONE && d->uploading)
	{
		values[0] = Int64GetDatum(d->task_id);
		values[1] = CStringGetTextDatum(d->key);
		kling_execute(&kling_keep_plans[KLING_KEEP_KEPT], values, NULL, 0);
		return true;
	}
	if (d->outcome == KLING_FETCH_DONE)
	{
		KlingStoreStep step = {k, *budget, false};

		if (*budget <= 0)
			return false;
		error = kling_try_in_subtransaction(kling_store_step, &step);
		*budget = step.budget;
		if (error == NULL)
			return step.whole;
		/* Rolled back; a large object of earlier rounds goes at the next try. */
		k->object = InvalidOid;
		k->stored = 0;
		d->outcome = KLING_FETCH_RETRY;
	}

	values[0] = Int64GetDatum(d->task_id);
	values[1] = Int32GetDatum(d->attempts + 1);
	if (d->outcome == KLING_FETCH_RETRY && d->attempts + 1 < kling_max_attempts)
	{
		values[2] = Int32GetDatum(kling_keep_backoff_ms(d->attempts));
		kling_execute(&kling_keep_plans[KLING_KEEP_RETRY], values, NULL, 0);
		return true;
	}
	if (d->outcome == KLING_FETCH_RETRY)
		error = psprintf("%s (after %d attempts)", error, d->attempts + 1);
	values[2] = CStringGetTextDatum(error);
	kling_execute(&kling_keep_plans[KLING_KEEP_FAIL], values, NULL, 0);
	return true;
}

/*
 * Whether the S3 settings are incomplete: then nothing is fetched (no
 * attempt is spent on the configuration), and the log says why, once.
 */
static bool
kling_uploads_blocked(void)
{
	static bool said = false;
	const char *why = kling_storage == KLING_STORAGE_S3 ? kling_s3_unconfigured() : NULL;

	if (why != NULL && !said)
		ereport(WARNING,
				(errmsg("kling: videos are not kept for now: %s", why),
				 errhint("Set the kling.s3_* settings and reload the configuration.")));
	said = (why != NULL);
	return why != NULL;
}

/*
 * Claim tasks whose videos are due to be fetched, up to the free places.
 * Returns when the next of the others is due (0: none seen).
 */
static TimestampTz
kling_claim_keeps(void)
{
	int			room = KLING_MAX_DOWNLOADS - list_length(kling_keeps);
	Datum	   *busy = palloc(Max(1, list_length(kling_keeps)) * sizeof(Datum));
	Datum		values[2];
	ListCell   *lc;
	int			n = 0;
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	TimestampTz next_due = 0;

	if (room <= 0 || kling_uploads_blocked())
		return 0;
	/* Those recorded in this round leave at its commit: a retry's time shows. */
	foreach(lc, kling_keeps)
	{
		KlingKeep  *k = lfirst(lc);

		if (!k->recorded)
			busy[n++] = Int64GetDatum(k->download->task_id);
	}
	values[0] = kling_array(busy, NULL, n, INT8OID);
	values[1] = Int32GetDatum(room);
	kling_execute(&kling_keep_plans[KLING_KEEP_CLAIM], values, NULL, 0);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tuple = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old;
		KlingClaimedKeep *c;
		bool		isnull;
		Datum		due = SPI_getbinval(tuple, desc, 5, &isnull);
		char	   *key;

		if (!isnull && DatumGetTimestampTz(due) > now)
		{
			next_due = DatumGetTimestampTz(due);
			break;
		}
		old = MemoryContextSwitchTo(kling_keeper_context());
		c = palloc(sizeof(KlingClaimedKeep));
		c->id = kling_result_int8(i, 1);
		c->url = SPI_getvalue(tuple, desc, 2);
		c->attempts = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		key = SPI_getvalue(tuple, desc, 4);
		c->partial = key != NULL && strncmp(key, "lo:", 3) == 0;
		kling_claimed = lappend(kling_claimed, c);
		MemoryContextSwitchTo(old);
	}
	/* A large object left half made by an earlier try goes now. */
	foreach(lc, kling_claimed)
	{
		KlingClaimedKeep *c = lfirst(lc);

		if (!c->partial)
			continue;
		values[0] = Int64GetDatum(c->id);
		kling_execute(&kling_keep_plans[KLING_KEEP_DISCARD_PARTIAL], values, NULL, 0);
	}
	return next_due;
}

/*
 * In the round's transaction: record finished fetches, claim more.
 * Returns when a waiting one is next due (0 if none is known to wait:
 * downloads in flight wake the loop when they end).
 */
TimestampTz
kling_keeper_round(void)
{
	ListCell   *lc;
	bool		unfinished = false;
	int64		budget = KLING_STORE_PER_ROUND;
	TimestampTz due;

	foreach(lc, kling_keeps)
	{
		KlingKeep  *k = lfirst(lc);

		if (k->download->outcome != KLING_FETCH_RUNNING && !k->recorded)
		{
			k->recorded = kling_record(k, &budget);
			unfinished |= !k->recorded;
		}
	}
	due = kling_claim_keeps();

	/* A file only partly stored: the next round comes at once. */
	return unfinished ? GetCurrentTimestamp() : due;
}

/* Forget the claims (their URLs too). */
static void
kling_forget_claims(void)
{
	ListCell   *lc;

	foreach(lc, kling_claimed)
		pfree(((KlingClaimedKeep *) lfirst(lc))->url);
	list_free_deep(kling_claimed);
	kling_claimed = NIL;
}

/*
 * The round committed: forget what it recorded, start what it claimed.
 * Returns whether it settled any (their tasks are to be delivered).
 */
bool
kling_keeper_committed(void)
{
	MemoryContext old = MemoryContextSwitchTo(kling_keeper_context());
	ListCell   *lc;
	bool		settled = false;

	foreach(lc, kling_keeps)
	{
		KlingKeep  *k = lfirst(lc);

		k->object_committed = k->object;
		k->stored_committed = k->stored;
		if (k->recorded)
		{
			settled = true;
			kling_download_discard(k->download);
			if (k->download->error != NULL)
				pfree(k->download->error);
			pfree(k->download);
			pfree(k);
			kling_keeps = foreach_delete_current(kling_keeps, lc);
		}
	}
	foreach(lc, kling_claimed)
	{
		KlingClaimedKeep *c = lfirst(lc);
		KlingKeep  *k = palloc0(sizeof(KlingKeep));

		k->download = kling_download_start(c->id, c->url, c->attempts);
		kling_keeps = lappend(kling_keeps, k);
	}
	kling_forget_claims();
	foreach(lc, kling_object_deletes)
	{
		KlingObjectDelete *o = lfirst(lc);

		if (o->request == NULL)
			o->request = kling_s3_delete_start(o->key, o);
	}
	MemoryContextSwitchTo(old);
	return settled;
}

/* The round rolled back: its records are undone, its claims void. */
void
kling_keeper_aborted(void)
{
	ListCell   *lc;

	foreach(lc, kling_keeps)
	{
		KlingKeep  *k = lfirst(lc);

		k->recorded = false;
		k->object = k->object_committed;
		k->stored = k->stored_committed;
	}
	kling_forget_claims();
	/* The deletes rolled back: their objects stay with their tasks. */
	foreach(lc, kling_object_deletes)
	{
		KlingObjectDelete *o = lfirst(lc);

		if (o->request == NULL)
		{
			pfree(o->key);
			pfree(o);
			kling_object_deletes = foreach_delete_current(kling_object_deletes, lc);
		}
	}
}

/* At exit (a signal, an error): no file is left behind. */
void
kling_keeper_at_exit(int code, Datum arg)
{
	ListCell   *lc;

	foreach(lc, kling_keeps)
	{
		KlingDownload *d = ((KlingKeep *) lfirst(lc))->download;

		if (d->path[0] != '\0')
			(void) unlink(d->path);
	}
}

/* The worker leaves: stop every download and remove its file. */
void
kling_keeper_stop(void)
{
	ListCell   *lc;

	foreach(lc, kling_keeps)
		kling_download_discard(((KlingKeep *) lfirst(lc))->download);
	foreach(lc, kling_object_deletes)
	{
		KlingObjectDelete *o = lfirst(lc);

		if (o->request != NULL)
			kling_http_cancel(o->request);
	}
	kling_keeps = NIL;
	kling_claimed = NIL;
	kling_object_deletes = NIL;
	if (kling_keep_context != NULL)
		MemoryContextReset(kling_keep_context);
}
