-- test/pgtap/setup.sql: the database the pgTAP suite runs in, with helpers
-- that drive the mock API (through curl, as the server's user) and wait for
-- the worker.  Loaded once by test/run before pg_prove.

CREATE EXTENSION pgtap;
CREATE EXTENSION kling;

-- Quote a string for the shell.
CREATE FUNCTION shell_quote(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT '''' || replace(s, '''', '''\''''') || '''' $$;

-- Call the mock's control API: method, path under the base URL, JSON body.
CREATE FUNCTION mock(method text, path text, body jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    cmd text;
    answer text;
BEGIN
    cmd := 'curl -sS -g --max-time 10 -X ' || method
        || CASE WHEN body IS NULL THEN ''
                ELSE ' -H ''Content-Type: application/json'' --data-binary '
                     || shell_quote(body::text) END
        || ' ' || shell_quote(current_setting('kling.base_url') || path);
    CREATE TEMP TABLE IF NOT EXISTS mock_answer (line text);
    TRUNCATE mock_answer;
    EXECUTE format('COPY mock_answer FROM PROGRAM %L WITH (FORMAT csv, QUOTE %L, DELIMITER %L)',
                   cmd, E'\x01', E'\x02');
    SELECT string_agg(line, E'\n') INTO answer FROM mock_answer;
    RETURN answer::jsonb;
END $$;

-- Forget everything the mock knows and remove all tasks: a clean start.
CREATE FUNCTION mock_reset(config jsonb DEFAULT '{}') RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM mock('POST', '/__mock/reset', '{}');
    PERFORM mock('POST', '/__mock/config', config);
    DELETE FROM kling_tasks;
END $$;

CREATE FUNCTION mock_stats() RETURNS jsonb
LANGUAGE sql AS $$ SELECT mock('GET', '/__mock/stats') $$;

-- Percent-encode every byte of the UTF-8 form but the unreserved ones.
CREATE FUNCTION url_encode(s text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(string_agg(
        CASE WHEN b BETWEEN 48 AND 57 OR b BETWEEN 65 AND 90 OR b BETWEEN 97 AND 122
                  OR b IN (45, 46, 95, 126)
             THEN chr(b) ELSE '%' || upper(lpad(to_hex(b), 2, '0')) END, '' ORDER BY i), '')
    FROM (SELECT i, get_byte(convert_to(s, 'UTF8'), i) AS b
          FROM generate_series(0, octet_length(convert_to(s, 'UTF8')) - 1) i) bytes
$$;

-- The create bodies the mock received for one prompt.
CREATE FUNCTION mock_bodies(prompt text) RETURNS jsonb
LANGUAGE sql AS $$ SELECT mock('GET', '/__mock/bodies?prompt=' || url_encode(prompt)) $$;

-- Wait until every given task is final and delivered (write-back, callback),
-- or the timeout passes; returns how many are.  Each look takes a new snapshot.
CREATE FUNCTION wait_final(ids bigint[], timeout interval DEFAULT '30 s') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    done bigint;
BEGIN
    LOOP
        SELECT count(*) INTO done FROM kling_tasks
        WHERE id = ANY (ids) AND status IN ('completed', 'failed', 'cancelled')
          AND NOT delivery_pending;
        EXIT WHEN done = cardinality(ids) OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN done;
END $$;

-- Wait until a query (one boolean) is true, or the timeout passes; returns
-- its last value.  Each look takes a new snapshot.
CREATE FUNCTION wait_until(cond text, timeout interval DEFAULT '10 s') RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    deadline timestamptz := clock_timestamp() + timeout;
    result boolean;
BEGIN
    LOOP
        EXECUTE cond INTO result;
        EXIT WHEN coalesce(result, false) OR clock_timestamp() > deadline;
        PERFORM pg_sleep(0.02);
    END LOOP;
    RETURN coalesce(result, false);
END $$;

-- Append fault rules (one rule or a list) to the mock's FIFO.
CREATE FUNCTION mock_fault(rules jsonb) RETURNS jsonb
LANGUAGE sql AS $$ SELECT mock('POST', '/__mock/faults', rules) $$;

-- How many tasks the mock created for one prompt (0 if none).
CREATE FUNCTION mock_created(prompt text) RETURNS int
LANGUAGE sql AS $$ SELECT coalesce((mock_stats() -> 'creates_by_prompt' ->> prompt)::int, 0) $$;

-- How many faults of one kind the mock served (0 if none).
CREATE FUNCTION mock_served(kind text) RETURNS int
LANGUAGE sql AS $$ SELECT coalesce((mock_stats() -> 'faults_served' ->> kind)::int, 0) $$;

-- How many create requests the mock received for one prompt.
CREATE FUNCTION mock_sent(prompt text) RETURNS int
LANGUAGE sql AS $$ SELECT jsonb_array_length(mock_bodies(prompt)) $$;
