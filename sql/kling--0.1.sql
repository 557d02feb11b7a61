-- kling--0.1.sql: the task table and the SQL surface of the kling extension

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
    CONSTRAINT kling_tasks_status_check CHECK (status IN
        ('pending', 'submitting', 'queued', 'generating',
         'completed', 'failed', 'cancelled'))
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

-- The worker finds due work through this index; final tasks stay out of it,
-- so it stays small however long the history grows.
CREATE INDEX kling_tasks_due_idx ON kling_tasks (next_attempt_at)
    WHERE status IN ('pending', 'submitting', 'queued', 'generating');

-- The spend limits count a role's tasks through these.
CREATE INDEX kling_tasks_owner_active_idx ON kling_tasks (owner)
    WHERE status IN ('pending', 'submitting', 'queued', 'generating');
CREATE INDEX kling_tasks_owner_created_idx ON kling_tasks (owner, created_at);

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
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION kling_status(bigint) IS
    'The task''s row as it stands; an error if no such task is visible';

-- Stop a task: never sent if still pending, no longer followed if sent.
CREATE FUNCTION kling_cancel(id bigint)
RETURNS boolean
AS 'MODULE_PATHNAME', 'kling_cancel'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kling_cancel(bigint) IS
    'Cancel a task that is not final; true if it changed anything';

-- Block until the task is final or the timeout passes.
CREATE FUNCTION kling_wait(id bigint, timeout interval DEFAULT '30 min')
RETURNS kling_tasks
AS 'MODULE_PATHNAME', 'kling_wait'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION kling_wait(bigint, interval) IS
    'Wait until the task is final or the timeout passes; returns its row as it stands';

-- Trigger: a task for every row inserted, its id (and later its video URL)
-- written into the row.
CREATE FUNCTION kling_on_insert()
RETURNS trigger
AS 'MODULE_PATHNAME', 'kling_on_insert'
LANGUAGE C;

COMMENT ON FUNCTION kling_on_insert() IS
    'BEFORE INSERT trigger: kling_on_insert(prompt_column, task_id_column, video_url_column [, opts [, opts_column [, on_missing_prompt]]])';

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
