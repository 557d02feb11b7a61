-- The history as reports: daily volume, latency and spend per model, the
-- most frequent failures, and the worker's health.
SET TimeZone = 'UTC';
INSERT INTO kling_tasks (owner, prompt, opts, status, created_at, completed_at, result, error)
SELECT 'reporter', 'report ' || i,
       jsonb_build_object('model', CASE WHEN i % 4 = 0 THEN 'kling-video/v1.6/pro/text-to-video'
                                        ELSE 'klingai/v2.1-master-text-to-video' END,
                          'duration', 5, 'aspect_ratio', '16:9'),
       CASE WHEN i % 10 = 0 THEN 'failed' WHEN i % 10 = 1 THEN 'cancelled'
            WHEN i % 10 = 2 THEN 'queued' ELSE 'completed' END,
       timestamptz '2026-03-01 08:00:00+00' + (i / 50) * interval '1 day',
       CASE WHEN i % 10 <> 2 THEN timestamptz '2026-03-01 08:00:00+00' + (i / 50) * interval '1 day'
                                  + (300 + i) * interval '1 second' END,
       CASE WHEN i % 10 NOT IN (0, 1, 2)
            THEN jsonb_build_object('status', 'completed', 'meta',
                                    jsonb_build_object('usage', jsonb_build_object('credits_used', 1000))) END,
       CASE WHEN i % 20 = 0 THEN format('gave up after 5 attempts: the provider answered HTTP 503: busy (%s)', 100000 + i)
            WHEN i % 10 = 0 THEN 'ModerationError: Prompt rejected by moderation' END
FROM generate_series(0, 99) i;
-- A provider that reports credits as something else than a number does not break the report.
UPDATE kling_tasks SET result = '{"meta": {"usage": {"credits_used": "lots"}}}' WHERE prompt = 'report 3';

SELECT * FROM kling_stats ORDER BY day, model;
SELECT reason, failures, first_seen, last_seen FROM kling_failures ORDER BY failures DESC, reason;

-- A role sees the figures of its own tasks only.
CREATE ROLE kling_viewer;
GRANT SELECT ON kling_tasks, kling_stats, kling_failures TO kling_viewer;
SET ROLE kling_viewer;
SELECT count(*) AS rows_seen FROM kling_stats;
SELECT count(*) AS reasons_seen FROM kling_failures;
SELECT * FROM kling_worker;
RESET ROLE;
REVOKE ALL ON kling_tasks, kling_stats, kling_failures FROM kling_viewer;
DROP ROLE kling_viewer;

-- No worker serves this database (kling.database_name leaves it out).
SELECT pid > 0 AS running, database, state, requests_in_flight, requests_sent,
       last_round_at IS NOT NULL AS has_run_a_round
FROM kling_worker;

-- The lookups that must stay fast use indexes.
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM kling_tasks WHERE id = 42;
EXPLAIN (COSTS OFF) SELECT id FROM kling_tasks WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY id LIMIT 10 FOR UPDATE SKIP LOCKED;
EXPLAIN (COSTS OFF) SELECT id FROM kling_tasks WHERE status IN ('queued', 'generating')
    AND next_attempt_at <= now() ORDER BY next_attempt_at LIMIT 10 FOR UPDATE SKIP LOCKED;
EXPLAIN (COSTS OFF) SELECT next_attempt_at FROM kling_tasks WHERE status = 'pending'
    ORDER BY next_attempt_at LIMIT 1;
EXPLAIN (COSTS OFF) SELECT id FROM kling_tasks WHERE status IN ('completed', 'failed', 'cancelled')
    AND completed_at < now() - interval '30 days' LIMIT 1000;
RESET enable_seqscan;

DELETE FROM kling_tasks;
