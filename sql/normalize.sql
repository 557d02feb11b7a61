-- Valid options are stored normalized: defaults filled in, "10" as 10.
SELECT setval('kling_tasks_id_seq', 100, false);

SELECT kling_submit('defaults only');
SELECT kling_submit('no options at all', NULL);
SELECT kling_submit('duration as a string', '{"duration": "10"}');
SELECT kling_submit('duration as 10.0', '{"duration": 10.0}');
SELECT kling_submit('every option', '{
    "model": "kling-video/v1.6/pro/text-to-video",
    "negative_prompt": "blur, low quality",
    "aspect_ratio": "9:16",
    "duration": 10,
    "cfg_scale": 0.7,
    "camera_control": "forward_up",
    "external_task_id": "scene-42",
    "context": {"scene": 42, "tags": ["intro"]}
}');
SELECT kling_submit('cfg_scale at its bounds', '{"cfg_scale": 0}');
SELECT kling_submit('cfg_scale at its bounds', '{"cfg_scale": 1}');

SELECT id, prompt, status, opts FROM kling_tasks ORDER BY id;

-- Durations are stored as JSON numbers, never strings.
SELECT DISTINCT jsonb_typeof(opts->'duration') FROM kling_tasks;

-- A new task starts pending, owned by its submitter, with nothing sent.
SELECT status, owner = current_user AS own, generation_id, video_url, result,
       error, attempts, submitted_at, completed_at,
       created_at <= now() AND updated_at <= now() AS stamped
FROM kling_tasks WHERE id = 101;

DELETE FROM kling_tasks;
