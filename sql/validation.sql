-- Every bad prompt or option is an ERROR naming the problem; nothing is enqueued.

-- The prompt.
SELECT kling_submit(NULL);
SELECT kling_submit('');
SELECT kling_submit(E' \t\n ');
SELECT kling_submit(repeat('é', 2501));

-- opts must be an object.
SELECT kling_submit('a fox', '[]');
SELECT kling_submit('a fox', '"duration"');
SELECT kling_submit('a fox', 'null');

-- Unknown keys, with a hint listing the valid ones.
SELECT kling_submit('a fox', '{"durration": 5}');
SELECT kling_submit('a fox', '{"image_url": "https://example.com/a.png"}');

-- JSON null is never a value.
SELECT kling_submit('a fox', '{"duration": null}');
SELECT kling_submit('a fox', '{"context": null}');

-- model
SELECT kling_submit('a fox', '{"model": "klingai/v2.1-master-image-to-video"}');
SELECT kling_submit('a fox', '{"model": 21}');

-- negative_prompt
SELECT kling_submit('a fox', '{"negative_prompt": ["blur"]}');
SELECT kling_submit('a fox', jsonb_build_object('negative_prompt', repeat('x', 2501)));

-- aspect_ratio
SELECT kling_submit('a fox', '{"aspect_ratio": "4:3"}');
SELECT kling_submit('a fox', '{"aspect_ratio": 1.78}');

-- duration
SELECT kling_submit('a fox', '{"duration": 7}');
SELECT kling_submit('a fox', '{"duration": "7"}');
SELECT kling_submit('a fox', '{"duration": 5.5}');
SELECT kling_submit('a fox', '{"duration": "05"}');
SELECT kling_submit('a fox', '{"duration": true}');

-- cfg_scale
SELECT kling_submit('a fox', '{"cfg_scale": 1.5}');
SELECT kling_submit('a fox', '{"cfg_scale": -0.1}');
SELECT kling_submit('a fox', '{"cfg_scale": "0.5"}');
SELECT kling_submit('a fox', '{"cfg_scale": false}');

-- camera_control
SELECT kling_submit('a fox', '{"camera_control": "zoom_in"}');
SELECT kling_submit('a fox', '{"camera_control": {"type": "down_back"}}');

-- external_task_id
SELECT kling_submit('a fox', '{"external_task_id": 123}');

-- callback: whatever is wrong, the error names the option.
SELECT kling_submit('a fox', '{"callback": "nosuchfn"}');
SELECT kling_submit('a fox', '{"callback": "nosuchfn(kling_tasks)"}');
SELECT kling_submit('a fox', '{"callback": "nosuchfn(no_such_type)"}');
SELECT kling_submit('a fox', '{"callback": "lower(text)"}');

-- The SQLSTATE of each case: 22004 for a NULL prompt, 22023 for the rest.
CREATE FUNCTION submit_sqlstate(prompt text, opts jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kling_submit(prompt, opts);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END $$;

SELECT submit_sqlstate(p, o::jsonb) AS sqlstate, count(*) AS cases
FROM (VALUES
    (NULL, '{}'), ('', '{}'), (E' \t', '{}'), (repeat('é', 2501), '{}'),
    ('a', '[]'), ('a', '"x"'), ('a', 'null'), ('a', '{"durration": 5}'),
    ('a', '{"duration": null}'), ('a', '{"context": null}'),
    ('a', '{"model": "x"}'), ('a', '{"model": 21}'),
    ('a', '{"negative_prompt": 1}'), ('a', '{"aspect_ratio": "4:3"}'),
    ('a', '{"duration": 7}'), ('a', '{"duration": "7"}'), ('a', '{"duration": 5.5}'),
    ('a', '{"cfg_scale": 1.5}'), ('a', '{"cfg_scale": "0.5"}'),
    ('a', '{"camera_control": "zoom_in"}'), ('a', '{"external_task_id": 1}')
) AS cases(p, o)
GROUP BY 1 ORDER BY 1;

-- Nothing was enqueued by any of the above.
SELECT count(*) AS tasks FROM kling_tasks;

-- The limits are inclusive: 2500 characters (not bytes) is allowed.
SELECT kling_submit(repeat('é', 2500)) > 0 AS accepted;
SELECT kling_submit('a fox', jsonb_build_object('negative_prompt', repeat('é', 2500))) > 0 AS accepted;
SELECT count(*) AS tasks FROM kling_tasks;
DELETE FROM kling_tasks;
