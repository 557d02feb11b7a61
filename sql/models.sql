-- Every model's rules: what it requires, what it takes, how images are checked.
-- Tasks stay pending here (no worker serves this database): only the checks run.

\set png_b64 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
\set img '"https://cdn.example.com/product.png"'

-- The error a request gets, or 'accepted'.
CREATE FUNCTION submit_error(prompt text, opts jsonb) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM kling_submit(prompt, opts);
    RETURN 'accepted';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Each model accepts its minimal request; the stored opts show the defaults it takes.
CREATE TEMP TABLE minimal AS
SELECT m.model, kling_submit(m.prompt, m.opts::jsonb || jsonb_build_object('model', m.model)) AS id
FROM (VALUES
    ('klingai/v2.1-master-text-to-video', 'a fox', '{}'),
    ('klingai/v2-master-text-to-video', 'a fox', '{}'),
    ('kling-video/v1.6/standard/text-to-video', 'a fox', '{}'),
    ('kling-video/v1.6/pro/text-to-video', 'a fox', '{}'),
    ('klingai/v2.5-turbo/pro/text-to-video', 'a fox', '{}'),
    ('klingai/video-v2-6-pro-text-to-video', 'a fox', '{}'),
    ('klingai/v2.1-master-image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('kling-video/v2.1/pro/image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('kling-video/v2.1/standard/image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('klingai/v2-master-image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('klingai/v2.5-turbo/pro/image-to-video', 'a fox', '{"image_url": ' || :'img' || '}'),
    ('klingai/video-v2-6-pro-image-to-video', 'a fox', '{"image_url": ' || :'img' || '}'),
    ('kling-video/v1.6/pro/image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('kling-video/v1/pro/image-to-video', '', '{"image_url": ' || :'img' || '}'),
    ('kling-video/v1/standard/image-to-video', '', '{"image_url": ' || :'img' || '}')
) AS m(model, prompt, opts);
SELECT t.prompt, t.opts FROM minimal m JOIN kling_tasks t USING (id) ORDER BY t.id;

-- Every field each model takes, at once.
SELECT kling_submit('a fox', '{"model": "klingai/video-v2-6-pro-text-to-video", "aspect_ratio": "9:16",
    "duration": "10", "negative_prompt": "blur", "cfg_scale": 0.5, "generate_audio": false}') > 0 AS accepted;
SELECT kling_submit('a fox', '{"model": "klingai/video-v2-6-pro-image-to-video", "image_url": "https://x.example/a.jpg",
    "tail_image_url": "https://x.example/b.jpg", "duration": 10, "negative_prompt": "blur", "cfg_scale": 1,
    "generate_audio": true}') > 0 AS accepted;
SELECT kling_submit('', '{"model": "klingai/v2.1-master-image-to-video", "image_url": "https://x.example/a.jpg",
    "static_mask": "https://x.example/m.png",
    "dynamic_masks": [{"mask": "https://x.example/d.png", "trajectories": [{"x": 1, "y": 2}, {"x": 30, "y": 40}]}]}') > 0 AS accepted;

-- An unknown model lists the known ones.
SELECT kling_submit('a fox', '{"model": "klingai/v9-text-to-video"}');

-- A missing required field: the image, the prompt where a model requires one.
SELECT kling_submit('a fox', '{"model": "kling-video/v2.1/pro/image-to-video"}');
SELECT kling_submit('', '{"model": "klingai/v2.5-turbo/pro/image-to-video", "image_url": "https://x.example/a.jpg"}');
SELECT kling_submit(E' \t', '{"model": "klingai/video-v2-6-pro-image-to-video", "image_url": "https://x.example/a.jpg"}');
SELECT kling_submit('', '{"model": "klingai/video-v2-6-pro-text-to-video"}');
-- NULL is never a prompt; a model without one says to pass ''.
SELECT kling_submit(NULL, '{"model": "kling-video/v1/pro/image-to-video", "image_url": "https://x.example/a.jpg"}');

-- A field the model does not take.
SELECT kling_submit('a fox', '{"model": "klingai/v2.5-turbo/pro/text-to-video", "camera_control": "down_back"}');
SELECT kling_submit('a fox', '{"generate_audio": true}');
SELECT kling_submit('', '{"model": "klingai/v2.1-master-image-to-video", "image_url": "https://x.example/a.jpg", "aspect_ratio": "1:1"}');
SELECT kling_submit('', '{"model": "klingai/v2.1-master-image-to-video", "image_url": "https://x.example/a.jpg", "tail_image_url": "https://x.example/b.jpg"}');
SELECT kling_submit('a fox', '{"model": "klingai/v2.5-turbo/pro/image-to-video", "image_url": "https://x.example/a.jpg", "static_mask": "https://x.example/m.png"}');
SELECT kling_submit('a fox', '{"image_url": "https://x.example/a.jpg"}');

-- Wrong types.
SELECT kling_submit('a fox', '{"model": "klingai/video-v2-6-pro-text-to-video", "generate_audio": "yes"}');
SELECT kling_submit('a fox', '{"model": "klingai/video-v2-6-pro-text-to-video", "generate_audio": 1}');
SELECT kling_submit('', '{"model": "kling-video/v1/pro/image-to-video", "image_url": 42}');
SELECT kling_submit('', '{"model": "kling-video/v1/pro/image-to-video", "image_url": {"url": "https://x.example/a.jpg"}}');

-- image_url: an http(s) URL or a data URL of a PNG, JPEG or WebP image.
SELECT left(u, 40) AS image_url,
       submit_error('', jsonb_build_object('model', 'kling-video/v1/pro/image-to-video', 'image_url', u))
FROM unnest(ARRAY['ftp://x.example/a.jpg', 'file:///etc/passwd', '/images/a.jpg', 'https://',
                  'https:///a.jpg', 'https://x.example/a b.jpg', 'https://x.example/' || repeat('a', 8200),
                  'data:image/png,' || :'png_b64', 'data:text/plain;base64,aGVsbG8=',
                  'data:image/png;base64,', 'data:image/png;base64,abc', 'data:image/png;base64,****',
                  'data:image/png;base64,aGVsbG8gd29ybGQh', 'data:image/jpeg;base64,' || :'png_b64']) u;
-- Accepted: either case of scheme, and each image type as data.
SELECT count(kling_submit('', jsonb_build_object('model', 'kling-video/v1/pro/image-to-video', 'image_url', u))) AS accepted
FROM unnest(ARRAY['HTTPS://x.example/a.jpg', 'http://x.example:8080/a.jpg?sig=1',
                  'data:image/png;base64,' || :'png_b64',
                  'data:image/jpeg;base64,' || encode('\xffd8ffe000104a464946'::bytea, 'base64'),
                  'data:image/webp;base64,' || encode(decode('52494646240000005745425056503820', 'hex'), 'base64')]) u;
-- A data URL over 10 MB.
SELECT kling_submit('', jsonb_build_object('model', 'kling-video/v1/pro/image-to-video',
    'image_url', 'data:image/png;base64,' || translate(encode(decode(:'png_b64', 'base64')
        || decode(repeat('00', 10 * 1024 * 1024), 'hex'), 'base64'), E'\n', '')));
-- tail_image_url and static_mask are images too, and name themselves.
SELECT kling_submit('a fox', '{"model": "klingai/video-v2-6-pro-image-to-video", "image_url": "https://x.example/a.jpg", "tail_image_url": "b.jpg"}');
SELECT kling_submit('', '{"model": "klingai/v2.1-master-image-to-video", "image_url": "https://x.example/a.jpg", "static_mask": "m.png"}');

-- dynamic_masks: 1 to 6 masks, each an image and 2 to 77 integer points.
SELECT m AS dynamic_masks, submit_error('', jsonb_build_object('model', 'klingai/v2.1-master-image-to-video',
    'image_url', 'https://x.example/a.jpg', 'dynamic_masks', m::jsonb))
FROM unnest(ARRAY['{}', '[]', '[1]', '[{"mask": "https://x.example/d.png"}]',
    '[{"mask": "d.png", "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}]',
    '[{"mask": "https://x.example/d.png", "trajectories": [{"x": 1, "y": 2}]}]',
    '[{"mask": "https://x.example/d.png", "trajectories": [{"x": 1.5, "y": 2}, {"x": 3, "y": 4}]}]',
    '[{"mask": "https://x.example/d.png", "trajectories": [{"x": 1, "y": 2}, {"x": 3}]}]',
    '[{"mask": "https://x.example/d.png", "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}], "z": 1}]']) m;

-- Every rule's error is SQLSTATE 22023 (a NULL prompt: 22004).
SELECT left(submit_error(p, o::jsonb), 5) AS sqlstate, count(*) AS cases
FROM (VALUES
    ('a', '{"model": "nope"}'), ('a', '{"model": "kling-video/v1/pro/image-to-video"}'),
    ('', '{"model": "klingai/video-v2-6-pro-text-to-video"}'),
    ('a', '{"model": "klingai/v2.5-turbo/pro/text-to-video", "external_task_id": "x"}'),
    ('a', '{"model": "klingai/video-v2-6-pro-text-to-video", "generate_audio": "true"}'),
    ('', '{"model": "kling-video/v1/pro/image-to-video", "image_url": "s3://b/a.png"}'),
    ('', '{"model": "kling-video/v1/pro/image-to-video", "image_url": "data:image/gif;base64,R0lGODlh"}'),
    ('', '{"model": "klingai/v2-master-image-to-video", "image_url": "https://x/a", "dynamic_masks": [1]}'),
    (NULL, '{"model": "kling-video/v1/pro/image-to-video", "image_url": "https://x/a"}')
) AS cases(p, o)
GROUP BY 1 ORDER BY 1;

-- The trigger's seventh argument: the image column, text or bytea.
CREATE TABLE products (id serial, name text, image bytea, image_url text,
                       task_id bigint, video_url text);
CREATE TRIGGER animate BEFORE INSERT ON products FOR EACH ROW
    EXECUTE FUNCTION kling_on_insert('name', 'task_id', 'video_url',
        '{"model": "klingai/v2.1-master-image-to-video"}', '', 'skip', 'image');
-- bytea is sent as a data URL of its type; no name is no prompt for this model.
INSERT INTO products (name, image) VALUES
    ('a red kettle', decode(:'png_b64', 'base64')),
    (NULL, decode('ffd8ffe000104a464946', 'hex'));
SELECT p.name, t.prompt, t.opts ->> 'image_url' AS image_url
FROM products p JOIN kling_tasks t ON t.id = p.task_id ORDER BY p.id;
-- 'skip': a row without an image gets no task.
INSERT INTO products (name) VALUES ('no image yet');
SELECT name, task_id FROM products WHERE image IS NULL;
-- Not an image, or over the provider's 10 MB: refused at insert, the row with it.
INSERT INTO products (name, image) VALUES ('a text file', convert_to('hello', 'UTF8'));
INSERT INTO products (name, image)
    SELECT 'too big', decode(:'png_b64', 'base64') || decode(repeat('00', 10 * 1024 * 1024), 'hex');
-- A text column holds a URL, checked as image_url; 'error' refuses a row without one.
CREATE TRIGGER animate_url BEFORE INSERT ON products FOR EACH ROW
    WHEN (NEW.image IS NULL)
    EXECUTE FUNCTION kling_on_insert('name', 'task_id', 'video_url',
        '{"model": "kling-video/v1.6/pro/image-to-video"}', '', 'error', 'image_url');
INSERT INTO products (name, image_url) VALUES ('a blue kettle', 'https://shop.example/blue.jpg');
SELECT p.name, t.opts ->> 'image_url' AS image_url
FROM products p JOIN kling_tasks t ON t.id = p.task_id WHERE p.image IS NULL;
INSERT INTO products (name, image_url) VALUES ('a kettle', 'blue.jpg');
INSERT INTO products (name) VALUES ('a kettle without image');
-- The image column must be text, varchar or bytea.
CREATE TABLE bad_products (name text, image int, task_id bigint, video_url text);
CREATE TRIGGER animate BEFORE INSERT ON bad_products FOR EACH ROW
    EXECUTE FUNCTION kling_on_insert('name', 'task_id', 'video_url',
        '{"model": "klingai/v2.1-master-image-to-video"}', '', 'error', 'image');
INSERT INTO bad_products VALUES ('x', 1);
DROP TABLE products, bad_products;

-- Nothing was enqueued by any refused request or row.
SELECT opts ->> 'model' AS model, count(*) AS tasks FROM kling_tasks GROUP BY 1 ORDER BY 1;

-- opts.keep: stored only when true; kling.keep_videos is its default.
UPDATE kling_tasks SET status = 'cancelled' WHERE status = 'pending';  -- room under kling.max_active_tasks
SELECT kling_submit('kept fox', '{"keep": true}') AS id \gset
SELECT opts FROM kling_tasks WHERE id = :id;
SELECT kling_submit('unkept fox', '{"keep": false}') AS id \gset
SELECT opts FROM kling_tasks WHERE id = :id;
SET kling.keep_videos = on;
SELECT kling_submit('kept by default') AS id \gset
SELECT opts FROM kling_tasks WHERE id = :id;
SELECT kling_submit('not kept after all', '{"keep": false}') AS id \gset
SELECT opts FROM kling_tasks WHERE id = :id;
RESET kling.keep_videos;
SELECT kling_submit('a fox', '{"keep": "yes"}');
