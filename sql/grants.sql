-- Granting in one line: kling_user may use the extension, kling_monitor
-- may watch the worker; neither may do the other's part.

SELECT setval('kling_tasks_id_seq', 500, false);
CREATE ROLE kling_newcomer;
GRANT kling_user TO kling_newcomer;
CREATE SCHEMA newcomer AUTHORIZATION kling_newcomer;
SET ROLE kling_newcomer;
SELECT kling_submit('a newcomer''s first video') AS t \gset
SELECT status FROM kling_status(:t);
SELECT count(*) AS own_tasks FROM kling_tasks;
SELECT model, submitted FROM kling_stats;
SELECT count(*) AS failure_reasons FROM kling_failures;
SELECT kling_cancel(:t);
SELECT kling_retry(:t);
SELECT status FROM kling_wait(:t, '1 ms');
CREATE TABLE newcomer.scenes (prompt text, task_id bigint, video_url text);
CREATE TRIGGER scenes_video BEFORE INSERT ON newcomer.scenes FOR EACH ROW
    EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url');
INSERT INTO newcomer.scenes (prompt) VALUES ('a row of my own');
SELECT task_id IS NOT NULL AS row_got_a_task FROM newcomer.scenes;
SELECT count(*) FROM kling_worker;
RESET ROLE;

CREATE ROLE kling_watcher;
GRANT kling_monitor TO kling_watcher;
SET ROLE kling_watcher;
SELECT count(*) <= 1 AS worker_rows FROM kling_worker;
SELECT kling_submit('not a user');
SELECT count(*) FROM kling_tasks;
RESET ROLE;

DROP SCHEMA newcomer CASCADE;
DELETE FROM kling_tasks;
DROP ROLE kling_newcomer;
DROP ROLE kling_watcher;
