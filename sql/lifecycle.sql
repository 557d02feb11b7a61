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

-- Nothing is granted to PUBLIC.
CREATE ROLE kling_stranger;
SET ROLE kling_stranger;
SELECT kling_submit('not allowed');
SELECT kling_status(201);
SELECT kling_cancel(201);
SELECT kling_wait(201, '1 second');
RESET ROLE;
DROP ROLE kling_stranger;

DELETE FROM kling_tasks;
