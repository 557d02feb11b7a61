-- kling--0.2--0.3.sql: roles kling_user and kling_monitor; kling_retry; a
-- column for the delivery process; an index for the active limit's count of
-- cancelled tasks; NULL ids are errors

\echo Use "ALTER EXTENSION kling UPDATE TO '0.3'" to load this file. \quit

-- A task cancelled after it reached the provider still counts against the
-- active limit for a while (the provider goes on making it).
CREATE INDEX kling_tasks_owner_cancelled_idx ON kling_tasks (owner, submitted_at)
    WHERE status = 'cancelled';

-- Write-back and callbacks run in a process of their own, which finds its
-- work through this column.
ALTER TABLE kling_tasks ADD COLUMN delivery_pending boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN kling_tasks.delivery_pending IS
    'The task is final and its write-back or callback has yet to run';
CREATE INDEX kling_tasks_delivery_idx ON kling_tasks (id) WHERE delivery_pending;

-- A NULL id is an error, not a NULL row.
ALTER FUNCTION kling_status(bigint) CALLED ON NULL INPUT;
ALTER FUNCTION kling_cancel(bigint) CALLED ON NULL INPUT;
ALTER FUNCTION kling_wait(bigint, interval) CALLED ON NULL INPUT;

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
