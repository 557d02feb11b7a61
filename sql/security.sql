-- Least privilege: no role reads the key, redirects requests, sees or
-- changes another role's tasks, writes the table, or spends without bound.

CREATE ROLE kling_alice;
CREATE ROLE kling_bob;
GRANT EXECUTE ON FUNCTION kling_submit(text, jsonb), kling_status(bigint),
                          kling_cancel(bigint), kling_wait(bigint, interval)
      TO kling_alice, kling_bob;
GRANT SELECT ON kling_tasks TO kling_alice, kling_bob;
CREATE FUNCTION kling_tasks_spy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
GRANT EXECUTE ON FUNCTION kling_tasks_spy() TO kling_bob;
SELECT setval('kling_tasks_id_seq', 300, false);

-- Each role's task is its own.
SET ROLE kling_alice;
SELECT kling_submit('alice''s fox');
SELECT id, owner, status FROM kling_status(300);
RESET ROLE;
SET ROLE kling_bob;
SELECT kling_submit('bob''s owl');
SELECT id, owner, prompt FROM kling_tasks ORDER BY id;
SELECT kling_status(300);
SELECT kling_cancel(300);
SELECT kling_wait(300, '10 ms');

-- Nobody but the owner writes the table or hangs triggers on it.
INSERT INTO kling_tasks (prompt) VALUES ('sneaked in');
UPDATE kling_tasks SET status = 'completed' WHERE id = 301;
UPDATE kling_tasks SET video_url = 'https://evil.example/x.mp4' WHERE id = 300;
DELETE FROM kling_tasks;
TRUNCATE kling_tasks;
CREATE TRIGGER spy BEFORE UPDATE ON kling_tasks FOR EACH ROW EXECUTE FUNCTION kling_tasks_spy();
SELECT nextval('kling_tasks_id_seq');

-- The key cannot be read, and where requests go cannot be changed.
SHOW kling.api_key;
SELECT current_setting('kling.api_key');
SELECT count(*) FROM pg_settings WHERE name = 'kling.api_key';
SELECT count(*) FROM pg_show_all_settings() WHERE name = 'kling.api_key';
SET kling.base_url = 'http://127.0.0.1:9/steal';
SELECT set_config('kling.base_url', 'http://127.0.0.1:9/steal', false);
SET kling.api_route = 'unified';
ALTER ROLE kling_bob SET kling.base_url = 'http://127.0.0.1:9/steal';
ALTER SYSTEM SET kling.base_url = 'http://127.0.0.1:9/steal';
RESET ROLE;

-- Even a superuser sees only whether a key is set, never the key.
ALTER SYSTEM SET kling.api_key = 'sk-canary-0123456789';
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SHOW kling.api_key;
SELECT current_setting('kling.api_key');
ALTER SYSTEM RESET kling.api_key;
-- Only http and https URLs are accepted.
ALTER SYSTEM SET kling.base_url = 'file:///etc/passwd';
ALTER SYSTEM SET kling.base_url = 'gopher://127.0.0.1/';

-- A superuser sees every task.
SELECT id, owner FROM kling_tasks ORDER BY id;
SELECT owner FROM kling_status(300);

-- Spend limits: tasks not final per role, and tasks per day per role.
ALTER SYSTEM SET kling.max_active_tasks = 3;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SET ROLE kling_alice;
SELECT kling_submit('alice 2') > 0 AS accepted;
SELECT kling_submit('alice 3') > 0 AS accepted;
SELECT kling_submit('alice 4');
-- A bulk statement that would go over enqueues nothing.
SELECT kling_cancel(id) FROM kling_tasks WHERE prompt IN ('alice 2', 'alice 3');
SELECT count(*) FROM (SELECT kling_submit('bulk ' || i) FROM generate_series(1, 5) i) s;
SELECT count(*) AS bulk_tasks FROM kling_tasks WHERE prompt LIKE 'bulk %';
-- Likewise a bulk INSERT through the trigger: no row, no task.
RESET ROLE;
CREATE TABLE alice_scenes (prompt text, task_id bigint, video_url text);
CREATE TRIGGER alice_video BEFORE INSERT ON alice_scenes FOR EACH ROW
    EXECUTE FUNCTION kling_on_insert('prompt', 'task_id', 'video_url');
GRANT INSERT, SELECT ON alice_scenes TO kling_alice;
SET ROLE kling_alice;
INSERT INTO alice_scenes (prompt) SELECT 'row ' || i FROM generate_series(1, 5) i;
SELECT count(*) AS rows FROM alice_scenes;
SELECT count(*) AS row_tasks FROM kling_tasks WHERE prompt LIKE 'row %';
RESET ROLE;
DROP TABLE alice_scenes;
-- Bob has limits of his own.
RESET ROLE;
SET ROLE kling_bob;
SELECT kling_submit('bob 2') > 0 AS accepted;
RESET ROLE;
ALTER SYSTEM SET kling.max_active_tasks = 0;
ALTER SYSTEM SET kling.max_daily_tasks = 4;
SELECT pg_reload_conf();
SELECT pg_sleep(0.3);
SET ROLE kling_alice;
SELECT kling_submit('alice 5') > 0 AS accepted;
-- Cancelled tasks still count against the day.
SELECT kling_submit('alice 6');
RESET ROLE;
ALTER SYSTEM RESET kling.max_active_tasks;
ALTER SYSTEM RESET kling.max_daily_tasks;
SELECT pg_reload_conf();

-- A granted role controls its search_path and what its schema holds: none
-- of it runs in the queries made as the table's owner (which would make the
-- role a superuser here).  Spend limits are on, so their counts run too.
CREATE ROLE kling_mallory;
GRANT EXECUTE ON FUNCTION kling_submit(text, jsonb), kling_status(bigint),
                          kling_cancel(bigint), kling_wait(bigint, interval)
      TO kling_mallory;
GRANT SELECT ON kling_tasks TO kling_mallory;
CREATE SCHEMA mallory AUTHORIZATION kling_mallory;
SET ROLE kling_mallory;
CREATE TABLE mallory.fired (who name, what text);
CREATE FUNCTION mallory.escalate(what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO mallory.fired VALUES (current_user, what);
    EXECUTE 'ALTER ROLE kling_mallory SUPERUSER';
EXCEPTION WHEN insufficient_privilege THEN NULL;
END $$;
CREATE FUNCTION mallory.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.escalate('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION mallory.date_trunc(text, timestamptz, text) RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.escalate('date_trunc'); RETURN pg_catalog.date_trunc($1, $2, $3); END $$;
CREATE FUNCTION mallory.name_eq(name, name) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.escalate('='); RETURN $1::text = $2::text; END $$;
CREATE OPERATOR mallory.= (LEFTARG = name, RIGHTARG = name, FUNCTION = mallory.name_eq);
CREATE FUNCTION mallory.int8_eq(bigint, bigint) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM mallory.escalate('= on ids'); RETURN $1 OPERATOR(pg_catalog.=) $2; END $$;
CREATE OPERATOR mallory.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = mallory.int8_eq);
SET search_path = mallory, pg_catalog;
SELECT public.kling_submit('mallory''s raccoon') AS mallory_task \gset
SELECT status FROM public.kling_status(:mallory_task);
SELECT public.kling_cancel(:mallory_task);
SELECT status FROM public.kling_wait(:mallory_task, '1 ms');
RESET search_path;
RESET ROLE;
SELECT rolsuper AS mallory_is_superuser FROM pg_roles WHERE rolname = 'kling_mallory';
SELECT who, what FROM mallory.fired;

-- A callback must take the extension's own kling_tasks row, not that of a
-- table of the same name the role could drop under the worker's feet.
SET ROLE kling_mallory;
CREATE TABLE mallory.kling_tasks (id bigint);
CREATE FUNCTION mallory.cb(t mallory.kling_tasks) RETURNS void LANGUAGE sql AS '';
CREATE FUNCTION mallory.good_cb(t public.kling_tasks) RETURNS void LANGUAGE sql AS '';
SELECT kling_submit('look-alike row type', '{"callback": "mallory.cb(mallory.kling_tasks)"}');
SELECT opts ->> 'callback' AS callback
FROM kling_status(kling_submit('the real row type', '{"callback": "mallory.good_cb(kling_tasks)"}'));
RESET ROLE;
DROP SCHEMA mallory CASCADE;
DROP OWNED BY kling_mallory;
DROP ROLE kling_mallory;

DELETE FROM kling_tasks;
REVOKE ALL ON kling_tasks FROM kling_alice, kling_bob;
DROP FUNCTION kling_tasks_spy();
DROP OWNED BY kling_alice, kling_bob;
DROP ROLE kling_alice;
DROP ROLE kling_bob;
