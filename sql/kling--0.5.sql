-- kling--0.5.sql: the task table and the SQL surface of the kling extension

\echo Use "CREATE EXTENSION kling" to load this file. \quit

-- The generation history: one row per task, written by kling_submit and then
-- by the background worker as the task moves through its states.
CREATE TABLE kling_tasks (
    id              bigserial PRIMARY KEY,
    owner           name NOT NULL DEFAULT current_user,
    prompt          text NOT NULL,
    opts            jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending',
    generation_id   text,
    video_url       text,
    result          jsonb,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    submitted_at    timestamptz,
    completed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    target_table    regclass,
    target_id_column name,
    target_url_column name,
    delivery_error  text,
    delivery_pending boolean NOT NULL DEFAULT false,
    keep_state      text,
    keep_attempts   integer NOT NULL DEFAULT 0,
    keep_next_at    timestamptz,
    video_key       text,
    expires_at      timestamptz,
    target_video_column name,
    CONSTRAINT kling_tasks_status_check CHECK (status IN
        ('pending', 'submitting', 'queued', 'generating',
         'completed', 'failed', 'cancelled')),
    CONSTRAINT kling_tasks_keep_state_check CHECK (keep_state IN ('waiting', 'kept', 'failed'))
);

COMMENT ON TABLE kling_tasks IS
    'Kling video generation tasks: the queue and the generation history';
COMMENT ON COLUMN kling_tasks.owner IS
    'Role that submitted the task';
COMMENT ON COLUMN kling_tasks.opts IS
    'Normalized request parameters (defaults filled in)';
COMMENT ON COLUMN kling_tasks.status IS
    'pending, submitting, queued, generating, completed, failed or cancelled';
COMMENT ON COLUMN kling_tasks.generation_id IS
    'The provider''s id for the task, once it has accepted it';
COMMENT ON COLUMN kling_tasks.result IS
    'Last response from the provider, kept whole';
COMMENT ON COLUMN kling_tasks.error IS
    'Why the task failed, or the last transient error while it is retried';
COMMENT ON COLUMN kling_tasks.attempts IS
    'Transient failures in a row of the current request';
COMMENT ON COLUMN kling_tasks.next_attempt_at IS
    'When the worker next sends or polls this task';
COMMENT ON COLUMN kling_tasks.target_table IS
    'For a task made by kling_on_insert: the table whose row receives the video URL';
COMMENT ON COLUMN kling_tasks.delivery_error IS
    'Why writing the URL back or calling the callback failed, if it did';
COMMENT ON COLUMN kling_tasks.delivery_pending IS
    'The task is final and its write-back or callback has yet to run';
COMMENT ON COLUMN kling_tasks.keep_state IS
    'For a task whose video is kept: waiting (to be fetched), kept, or failed (delivery_error says why)';
COMMENT ON COLUMN kling_tasks.keep_attempts IS
    'Transient failures so far while fetching or storing the video';
COMMENT ON COLUMN kling_tasks.keep_next_at IS
    'When the worker next tries to fetch the video';
COMMENT ON COLUMN kling_tasks.video_key IS
    'With kling.storage = s3: the object key of the kept video';
COMMENT ON COLUMN kling_tasks.expires_at IS
    'When the provider''s video URL stops working: from the URL''s signature, else an estimate (30 days)';
COMMENT ON COLUMN kling_tasks.target_video_column IS
    'For a task made by kling_on_insert: the column that receives the kept video (bytea) or its object key (text)';

-- The worker finds due work through these; final tasks stay out of them,
-- so they stay small however long the history grows.  Pending tasks are
-- sent oldest first, in turns across their owners; tasks at the provider
-- are polled when due.
CREATE INDEX kling_tasks_send_idx ON kling_tasks (id)
    WHERE status = 'pending';
CREATE INDEX kling_tasks_send_due_idx ON kling_tasks (next_attempt_at)
    WHERE status = 'pending';
-- Pending tasks are taken in turns across their owners, fewest in flight
-- first.
CREATE INDEX kling_tasks_send_owner_idx ON kling_tasks (owner, id)
    WHERE status = 'pending';
CREATE INDEX kling_tasks_owner_in_flight_idx ON kling_tasks (owner)
    WHERE status IN ('submitting', 'queued', 'generating');
CREATE INDEX kling_tasks_poll_idx ON kling_tasks (next_attempt_at)
    WHERE status IN ('queued', 'generating');

-- The spend limits count a role's tasks through these.
CREATE INDEX kling_tasks_owner_active_idx ON kling_tasks (owner)
    WHERE status IN ('pending', 'submitting', 'queued', 'generating');
CREATE INDEX kling_tasks_owner_created_idx ON kling_tasks (owner, created_at);
-- The delivery process finds its work through this one.
CREATE INDEX kling_tasks_delivery_idx ON kling_tasks (id) WHERE delivery_pending;
-- A task cancelled after it reached the provider still counts against the
-- active limit for a while (the provider goes on making it).
CREATE INDEX kling_tasks_owner_cancelled_idx ON kling_tasks (owner, submitted_at)
    WHERE status = 'cancelled';
-- The worker finds videos to fetch through this one.
CREATE INDEX kling_tasks_keep_idx ON kling_tasks (keep_next_at)
    WHERE keep_state = 'waiting';

-- A role sees only its own tasks (superusers and the table owner see all).
-- Nobody but the owner may write the table: the functions below do the
-- writing, as the owner, on the caller's behalf.
ALTER TABLE kling_tasks ENABLE ROW LEVEL SECURITY;
CREATE POLICY kling_tasks_own ON kling_tasks FOR SELECT
    USING (owner = current_user);
REVOKE ALL ON kling_tasks FROM PUBLIC;
REVOKE ALL ON SEQUENCE kling_tasks_id_seq FROM PUBLIC;

-- Tasks are kept in dumps: they are the user's history, not configuration.
SELECT pg_catalog.pg_extension_config_dump('kling_tasks', '');
SELECT pg_catalog.pg_extension_config_dump('kling_tasks_id_seq', '');

-- Enqueue a task; the background worker sends it after commit.
CREATE FUNCTION kling_submit(prompt text, opts jsonb DEFAULT '{}')
RETURNS bigint
AS 'MODULE_PATHNAME', 'kling_submit'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_submit(text, jsonb) IS
    'Validate a prompt and options and enqueue a video generation task; returns its id';

-- A task's row as it stands now.
CREATE FUNCTION kling_status(id bigint)
RETURNS kling_tasks
AS 'MODULE_PATHNAME', 'kling_status'
LANGUAGE C STABLE;

COMMENT ON FUNCTION kling_status(bigint) IS
    'The task''s row as it stands; an error if no such task is visible';

-- Stop a task: never sent if still pending, no longer followed if sent.
CREATE FUNCTION kling_cancel(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kling_cancel'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_cancel(bigint) IS
    'Cancel a task that is not final; true if it changed anything';

-- Block until the task is final or the timeout passes.
CREATE FUNCTION kling_wait(id bigint, timeout interval DEFAULT '30 min')
RETURNS kling_tasks
AS 'MODULE_PATHNAME', 'kling_wait'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_wait(bigint, interval) IS
    'Wait until the task is final or the timeout passes; returns its row as it stands';

-- Trigger: a task for every row inserted, its id (and later its video URL)
-- written into the row.
CREATE FUNCTION kling_on_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kling_on_insert'
LANGUAGE C;

COMMENT ON FUNCTION kling_on_insert() IS
    'BEFORE INSERT trigger: kling_on_insert(prompt_column, task_id_column, video_url_column [, opts [, opts_column [, on_missing_prompt [, image_column [, video_column]]]]])';

-- What the worker makes of a provider response; for troubleshooting and tests.
CREATE FUNCTION kling_parse_response(kind text, http_status integer, body text,
                                     retry_after text DEFAULT NULL)
RETURNS jsonb
AS 'MODULE_PATHNAME', 'kling_parse_response'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_parse_response(text, integer, text, text) IS
    'How the worker reads a provider response (kind "create" or "poll"): the outcome as jsonb';

-- Nothing is granted to PUBLIC: an administrator grants use (see README).
REVOKE ALL ON FUNCTION kling_submit(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_status(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_cancel(bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_wait(bigint, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_on_insert() FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_parse_response(text, integer, text, text) FROM PUBLIC;

-- Final tasks by age, for kling.retention.
CREATE INDEX kling_tasks_final_idx ON kling_tasks (completed_at)
    WHERE status IN ('completed', 'failed', 'cancelled');

-- Daily volume, latency and spend per model.  Rows follow the row-level
-- security of kling_tasks: a role sees the figures of its own tasks.
CREATE VIEW kling_stats WITH (security_invoker = true) AS
SELECT date_trunc('day', created_at)::date AS day,
       opts ->> 'model' AS model,
       count(*) AS submitted,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
       count(*) FILTER (WHERE status NOT IN ('completed', 'failed', 'cancelled')) AS active,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at))
             FILTER (WHERE status = 'completed')::numeric, 1) AS p50_seconds,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - created_at))
             FILTER (WHERE status = 'completed')::numeric, 1) AS p95_seconds,
       sum(CASE WHEN jsonb_typeof(result #> '{meta,usage,credits_used}') = 'number'
                THEN (result #>> '{meta,usage,credits_used}')::numeric
                WHEN jsonb_typeof(result #> '{meta,usage,tokens_used}') = 'number'
                THEN (result #>> '{meta,usage,tokens_used}')::numeric END) AS credits_used
FROM kling_tasks
GROUP BY 1, 2;

COMMENT ON VIEW kling_stats IS
    'Tasks per day and model: volume, outcome, seconds from submission to completion (p50, p95), credits used as reported';

-- The most frequent failure reasons, ids and long numbers folded together.
CREATE VIEW kling_failures WITH (security_invoker = true) AS
SELECT regexp_replace(regexp_replace(left(error, 200),
           '[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}[^ ]*', '<id>', 'g'), '[0-9]{4,}', '<n>', 'g') AS reason,
       count(*) AS failures,
       min(completed_at) AS first_seen,
       max(completed_at) AS last_seen
FROM kling_tasks
WHERE status = 'failed'
GROUP BY 1;

COMMENT ON VIEW kling_failures IS
    'Failed tasks grouped by reason, with how many and when first and last seen';

-- The running worker's health, from shared memory.
CREATE FUNCTION kling_worker_info(
    OUT pid integer, OUT database name, OUT state text,
    OUT started_at timestamptz, OUT last_round_at timestamptz,
    OUT requests_in_flight integer, OUT requests_sent bigint,
    OUT requests_failed bigint, OUT requests_retried bigint,
    OUT rate_limited bigint, OUT last_error text, OUT last_error_at timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'kling_worker_info'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_worker_info() IS
    'The kling worker''s health from shared memory; no row when no worker runs';

CREATE VIEW kling_worker AS SELECT * FROM kling_worker_info();

COMMENT ON VIEW kling_worker IS
    'The kling worker: state, last round, requests in flight, sent, failed, retried, rate limited, last error';

REVOKE ALL ON kling_stats, kling_failures, kling_worker FROM PUBLIC;
REVOKE ALL ON FUNCTION kling_worker_info() FROM PUBLIC;

-- Send a failed task again, if it provably never reached the provider.
CREATE FUNCTION kling_retry(id bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'kling_retry'
LANGUAGE C VOLATILE;

COMMENT ON FUNCTION kling_retry(bigint) IS
    'Send a failed task again as a new attempt, if it never reached the provider; an error says why not';

REVOKE ALL ON FUNCTION kling_retry(bigint) FROM PUBLIC;

-- Two roles to grant in one line: kling_user submits, follows and reports
-- on its own tasks (and may put kling_on_insert on its tables);
-- kling_monitor watches the worker.  Roles belong to the whole server:
-- made by the first CREATE EXTENSION, reused by the others, kept by DROP
-- EXTENSION.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'kling_user') THEN
        CREATE ROLE kling_user NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'kling_monitor') THEN
        CREATE ROLE kling_monitor NOLOGIN;
    END IF;
END $$;
GRANT EXECUTE ON FUNCTION kling_submit(text, jsonb), kling_status(bigint), kling_cancel(bigint),
                          kling_retry(bigint), kling_wait(bigint, interval), kling_on_insert()
      TO kling_user;
GRANT SELECT ON kling_tasks, kling_stats, kling_failures TO kling_user;
GRANT EXECUTE ON FUNCTION kling_worker_info() TO kling_monitor;
GRANT SELECT ON kling_worker TO kling_monitor;

-- Kept videos stored in the database: a large object each (streamed in and
-- out in chunks, up to 4 TB, in dumps), listed here.  A role sees its own.
CREATE TABLE kling_videos (
    task_id      bigint PRIMARY KEY REFERENCES kling_tasks (id) ON DELETE CASCADE,
    owner        name NOT NULL,
    data         oid NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL,
    sha256       text NOT NULL,
    fetched_at   timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE kling_videos IS
    'Videos kept in the database (kling.storage = database): one large object per task';
COMMENT ON COLUMN kling_videos.data IS
    'The large object holding the file; read it with kling_video(task_id)';
COMMENT ON COLUMN kling_videos.sha256 IS
    'SHA-256 of the file, in hex, computed as it was fetched';

ALTER TABLE kling_videos ENABLE ROW LEVEL SECURITY;
CREATE POLICY kling_videos_own ON kling_videos FOR SELECT
    USING (owner = current_user);
REVOKE ALL ON kling_videos FROM PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('kling_videos', '');

-- A kept video's large object goes with its row (a task deleted by
-- kling.retention takes both).
CREATE FUNCTION kling_videos_unlink() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pg_catalog.lo_unlink(OLD.data);
    RETURN OLD;
END $$;
REVOKE ALL ON FUNCTION kling_videos_unlink() FROM PUBLIC;
CREATE TRIGGER kling_videos_unlink AFTER DELETE ON kling_videos
    FOR EACH ROW EXECUTE FUNCTION kling_videos_unlink();

-- The bytes of a kept video, for the task's owner.
CREATE FUNCTION kling_video(id bigint)
RETURNS bytea
AS 'MODULE_PATHNAME', 'kling_video'
LANGUAGE C STABLE;

COMMENT ON FUNCTION kling_video(bigint) IS
    'The kept video of a task (kling.storage = database), for its owner; an error if none';
REVOKE ALL ON FUNCTION kling_video(bigint) FROM PUBLIC;

-- Kept bytes per day, of the caller's own videos.
CREATE VIEW kling_storage WITH (security_invoker = true) AS
SELECT fetched_at::date AS day, count(*) AS videos, sum(size) AS bytes
FROM kling_videos
GROUP BY 1;

COMMENT ON VIEW kling_storage IS
    'Videos kept in the database per day: how many, how many bytes';
REVOKE ALL ON kling_storage FROM PUBLIC;
GRANT EXECUTE ON FUNCTION kling_video(bigint) TO kling_user;
GRANT SELECT ON kling_videos, kling_storage TO kling_user;
