-- Enqueue, status, cancel, wait, rollback, and who may call the functions.

-- A rolled-back transaction leaves nothing behind.
BEGIN;
SELECT kling_submit('rolled back') IS NOT NULL AS submitted;
ROLLBACK;
SELECT count(*) AS tasks FROM kling_tasks;

SELECT setval('kling_tasks_id_seq', 200, false);
SELECT kling_submit('a red fox in the snow');

-- kling_status returns the row; unknown ids are a clear error.
SELECT id, prompt, status FROM kling_status(200);
SELECT (kling_status(200)).status;
SELECT kling_status(999999);

-- Cancelling a pending task makes it cancelled for good.
SELECT kling_cancel(200);
SELECT status, completed_at IS NOT NULL AS completed_at_set FROM kling_status(200);
SELECT kling_cancel(200);
SELECT status FROM kling_status(200);
SELECT kling_cancel(999999);

-- kling_wait returns at once on a final task ...
SELECT status FROM kling_wait(200);
-- ... and returns the row as it stands when its timeout passes.
SELECT kling_submit('a pending task');
SELECT status FROM kling_wait(201, '150 milliseconds');
SELECT kling_wait(999999, '1 second');
-- It is interruptible: statement_timeout cancels it.
SET statement_timeout = '200ms';
SELECT kling_wait(201, '1 minute');
RESET statement_timeout;

-- A NULL id is an error, not a NULL row; a cancel that changes nothing says why.
SELECT kling_status(NULL);
SELECT kling_cancel(NULL);
SELECT kling_wait(NULL);
SELECT kling_wait(201, NULL);
SELECT kling_cancel(200);

-- kling_wait refuses the waits that could only time out: for a task this
-- transaction submitted (it is sent only after commit) ...
BEGIN;
SELECT kling_submit('waited for in its own transaction') AS same_tx \gset
SAVEPOINT s;
SELECT kling_wait(:same_tx, '10 s');
ROLLBACK TO s;
SELECT (kling_wait(200, '10 s')).status AS other_tasks_can_be_waited_for;
ROLLBACK;
-- ... and in REPEATABLE READ, which would never see the change.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT kling_wait(201, '10 s');
ROLLBACK;

-- kling_retry sends a failed task again only if it provably never reached
-- the provider.
SELECT kling_submit('never reached the provider') AS r1 \gset
SELECT kling_submit('outcome unknown') AS r2 \gset
SELECT kling_submit('reached the provider') AS r3 \gset
UPDATE kling_tasks SET status = 'failed', completed_at = now(), attempts = 5,
       error = 'gave up after 5 attempts: the provider answered HTTP 503: busy'
WHERE id = :r1;
UPDATE kling_tasks SET status = 'failed', completed_at = now(),
       error = 'outcome unknown: the request was sent but no complete response came back'
WHERE id = :r2;
UPDATE kling_tasks SET status = 'failed', completed_at = now(), generation_id = 'g-3',
       error = 'not finished by the provider within kling.task_timeout'
WHERE id = :r3;
SELECT kling_retry(:r1);
SELECT status, error, attempts, completed_at FROM kling_status(:r1);
SELECT kling_retry(:r1);
SELECT kling_retry(:r2);
SELECT kling_retry(:r3);
SELECT kling_retry(999999);

-- Nothing is granted to PUBLIC.
CREATE ROLE kling_stranger;
SET ROLE kling_stranger;
SELECT kling_submit('not allowed');
SELECT kling_status(201);
SELECT kling_cancel(201);
SELECT kling_wait(201, '1 second');
SELECT kling_retry(201);
RESET ROLE;
DROP ROLE kling_stranger;

DELETE FROM kling_tasks;
