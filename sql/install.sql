-- CREATE EXTENSION makes the documented objects, with nothing granted to PUBLIC.
CREATE EXTENSION kling;

SELECT p.oid::regprocedure AS function,
       pg_get_function_result(p.oid) AS returns,
       p.proacl IS NOT NULL AND NOT EXISTS (
           SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0
       ) AS not_public,
       obj_description(p.oid, 'pg_proc') IS NOT NULL AS commented
FROM pg_proc p
JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid
JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'kling'
ORDER BY 1::text;

SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull
FROM pg_attribute
WHERE attrelid = 'kling_tasks'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum;

SELECT obj_description('kling_tasks'::regclass, 'pg_class') IS NOT NULL AS table_commented;

-- The states a task can be in are exactly the documented ones.
SELECT pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = 'kling_tasks'::regclass AND contype = 'c'
ORDER BY conname;

-- Every documented setting exists with its unit; the key is not listed.
SELECT name, unit, context FROM pg_settings WHERE name LIKE 'kling.%' ORDER BY name;
SELECT count(*) AS api_key_listed FROM pg_settings WHERE name = 'kling.api_key';

-- The kling. prefix is reserved: a typo is an error, not a silent placeholder.
SET kling.pol_interval = '1s';

-- The launcher starts with the server; it starts a worker only in a
-- database with the extension, and kling.database_name leaves this one out.
DO $$
BEGIN
    FOR i IN 1 .. 100 LOOP
        EXIT WHEN (SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'kling launcher') = 1;
        PERFORM pg_sleep(0.1);
        PERFORM pg_stat_clear_snapshot();
    END LOOP;
END $$;
SELECT backend_type, datname FROM pg_stat_activity
WHERE backend_type = 'kling launcher';
