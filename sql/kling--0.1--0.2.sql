-- kling--0.1--0.2.sql: reporting views, the worker view, indexes for retention and due work

\echo Use "ALTER EXTENSION kling UPDATE TO '0.2'" to load this file. \quit

-- Due work by kind, so that every query of the worker's round reads only
-- what it returns.
DROP INDEX kling_tasks_due_idx;
CREATE INDEX kling_tasks_send_idx ON kling_tasks (id)
    WHERE status = 'pending';
CREATE INDEX kling_tasks_send_due_idx ON kling_tasks (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX kling_tasks_poll_idx ON kling_tasks (next_attempt_at)
    WHERE status IN ('queued', 'generating');

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
