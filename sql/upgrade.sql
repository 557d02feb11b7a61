-- The upgrade chain: 0.1 updated to the newest version has exactly the
-- objects of a fresh install.

-- Everything that makes up the installed extension, one line per fact.
CREATE FUNCTION upgrade_test_objects() RETURNS SETOF text
LANGUAGE sql AS $$
    SELECT 'member ' || pg_describe_object(d.classid, d.objid, 0)
           || coalesce(' comment ' || obj_description(d.objid, c.relname), '')
    FROM pg_depend d JOIN pg_class c ON c.oid = d.classid
    WHERE d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'kling')
      AND d.deptype = 'e'
    UNION ALL
    SELECT 'column ' || attname || ' ' || format_type(atttypid, atttypmod)
           || ' ' || attnotnull::text || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '')
           || coalesce(' comment ' || col_description(a.attrelid, a.attnum), '')
    FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE a.attrelid = 'kling_tasks'::regclass AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'kling_tasks'::regclass
    UNION ALL
    SELECT 'constraint ' || conname || ' ' || pg_get_constraintdef(oid)
    FROM pg_constraint WHERE conrelid = 'kling_tasks'::regclass
    UNION ALL
    SELECT 'policy ' || polname || ' ' || polcmd::text || ' ' || pg_get_expr(polqual, polrelid)
    FROM pg_policy WHERE polrelid = 'kling_tasks'::regclass
    UNION ALL
    SELECT 'relation ' || relname || ' ' || relkind::text || ' ' || coalesce(relacl::text, '')
           || ' ' || coalesce(reloptions::text, '') || ' ' || relrowsecurity::text
           || coalesce(' ' || pg_get_viewdef(oid), '')
    FROM pg_class WHERE relname LIKE 'kling%' AND relnamespace = 'public'::regnamespace
    UNION ALL
    SELECT 'function ' || pg_get_functiondef(oid) || ' ' || coalesce(proacl::text, '')
    FROM pg_proc WHERE proname LIKE 'kling%' AND pronamespace = 'public'::regnamespace
$$;

DROP EXTENSION kling;
CREATE EXTENSION kling VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'kling';
ALTER EXTENSION kling UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'kling';
CREATE TEMP TABLE updated AS SELECT * FROM upgrade_test_objects() AS o(fact);

DROP EXTENSION kling;
CREATE EXTENSION kling;
SELECT extversion FROM pg_extension WHERE extname = 'kling';
CREATE TEMP TABLE fresh AS SELECT * FROM upgrade_test_objects() AS o(fact);

SELECT count(*) > 40 AS compared_many_facts FROM fresh;
-- Nothing in one that is not in the other.
(SELECT 'only after update: ' || fact FROM updated EXCEPT ALL SELECT 'only after update: ' || fact FROM fresh)
UNION ALL
(SELECT 'only in fresh install: ' || fact FROM fresh EXCEPT ALL SELECT 'only in fresh install: ' || fact FROM updated);
DROP FUNCTION upgrade_test_objects();
