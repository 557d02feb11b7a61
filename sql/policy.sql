-- The worker's policy, asked directly: what one response means for its task
-- (the row update, whether it is written at all) and for the worker (its
-- effects, applied once however often a round's writes are tried).
-- kling.poll_interval is 10 s and kling.max_attempts 5 (the defaults);
-- the retry jitter is fixed at its middle.
CREATE SCHEMA policy_test;
CREATE FUNCTION policy_test.decide(kind text, http_status integer, body text,
                                   attempts integer DEFAULT 0,
                                   generating boolean DEFAULT false,
                                   learned boolean DEFAULT false,
                                   retry_after text DEFAULT NULL,
                                   hold_ms integer DEFAULT 10000)
RETURNS jsonb LANGUAGE c AS '$libdir/kling', 'kling_policy_decide';

-- Accepted: queued with its generation id, first poll after one interval.
SELECT policy_test.decide('create', 201, '{"id": "g1", "status": "queued"}');

-- A poll that finds the task as the table has it writes nothing.
SELECT policy_test.decide('poll', 200, '{"id": "g1", "status": "queued"}') -> 'write' AS queued_again,
       policy_test.decide('poll', 200, '{"id": "g1", "status": "generating"}', generating => true) -> 'write' AS generating_again;
-- A change of status is written; so is the end of an error (attempts back to 0).
SELECT policy_test.decide('poll', 200, '{"id": "g1", "status": "generating"}') -> 'write' AS now_generating,
       policy_test.decide('poll', 200, '{"id": "g1", "status": "queued"}', attempts => 2) -> 'write' AS error_cleared;
-- Inside the learned window, polls come every 40% of the interval.
SELECT policy_test.decide('poll', 200, '{"id": "g1", "status": "generating"}', generating => true, learned => true) -> 'next_attempt_ms' AS learned_next_ms;

-- Completed and failed are final, and always written.
SELECT policy_test.decide('poll', 200, '{"id": "g1", "status": "completed", "video": {"url": "https://cdn.example/v.mp4"}}');
SELECT policy_test.decide('poll', 200, '{"id": "g1", "status": "error", "error": {"message": "moderation"}}') ->> 'error' AS failed_with;

-- Transient failures back off: the interval doubles per attempt.
SELECT a AS attempts_before,
       (policy_test.decide('poll', 500, '{"error": "oops"}', attempts => a) ->> 'next_attempt_ms')::int AS next_ms
FROM generate_series(0, 3) a;
-- ... and the last allowed attempt fails the task.
SELECT policy_test.decide('poll', 500, '{"error": "oops"}', attempts => 4) ->> 'status' AS status,
       policy_test.decide('poll', 500, '{"error": "oops"}', attempts => 4) ->> 'error' AS error;
-- A 429 is counted, retried and never fails a task by itself; Retry-After
-- lengthens the wait but never shortens it below the backoff.
SELECT policy_test.decide('create', 429, '{}', attempts => 9, retry_after => '120');
SELECT (policy_test.decide('create', 429, '{}', retry_after => '1') ->> 'next_attempt_ms')::int AS short_retry_after_ms;

-- A refused key holds all sending; the task keeps its place for the hold.
SELECT policy_test.decide('create', 401, '{"message": "invalid key"}', hold_ms => 20000);

-- A create sent but unanswered has an unknown outcome: it fails, never resent.
SELECT policy_test.decide('create', 500, '{"error": "boom"}') ->> 'status' AS status,
       policy_test.decide('create', 500, '{"error": "boom"}') ->> 'error' AS error;
-- An unreadable accepted create is unknown too; an unreadable poll is retried.
SELECT policy_test.decide('create', 201, '{"id": ') ->> 'error' AS create_unreadable,
       policy_test.decide('poll', 200, '{"id": ') ->> 'error' AS poll_unreadable;

-- Only the body and Retry-After may be null.
SELECT policy_test.decide('poll', 200, NULL) ->> 'error' AS no_body;
SELECT policy_test.decide('poll', 200, '{}', attempts => NULL);
SELECT policy_test.decide('push', 200, '{}');

DROP SCHEMA policy_test CASCADE;
