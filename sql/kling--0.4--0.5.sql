-- kling--0.4--0.5.sql: kept videos (opts.keep, kling.keep_videos), where
-- they are (kling_videos, or an object key), when the provider's URL
-- expires; kling_on_insert's seventh and eighth arguments, an image column
-- and a column for the kept video.

\echo Use "ALTER EXTENSION kling UPDATE TO '0.5'" to load this file. \quit

ALTER TABLE kling_tasks
    ADD COLUMN keep_state text,
    ADD COLUMN keep_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN keep_next_at timestamptz,
    ADD COLUMN video_key text,
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN target_video_column name,
    ADD CONSTRAINT kling_tasks_keep_state_check CHECK (keep_state IN ('waiting', 'kept', 'failed'));

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

CREATE INDEX kling_tasks_keep_idx ON kling_tasks (keep_next_at)
    WHERE keep_state = 'waiting';

COMMENT ON FUNCTION kling_on_insert() IS
    'BEFORE INSERT trigger: kling_on_insert(prompt_column, task_id_column, video_url_column [, opts [, opts_column [, on_missing_prompt [, image_column [, video_column]]]]])';

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
