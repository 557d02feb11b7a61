-- How the worker reads provider responses: the documented shapes and errors.

-- Create: any 2xx with "id" or "generation_id"; ids of any shape kept as text.
SELECT kling_parse_response('create', 201,
    '{"id": "ce81dc29-0fb7-4dc9-b412-355933b1b9cf:kling-video/v2.1/master/text-to-video", "status": "queued"}');
SELECT kling_parse_response('create', 200,
    '{"generation_id": "Xq3_-aZ9bT1kLm0pQr7sU", "status": "queued", "meta": {"usage": {"credits_used": 1207500}}}');
SELECT kling_parse_response('create', 200, '{"id": 123456789012345678, "status": "queued"}');
SELECT kling_parse_response('create', 202, '{"id": "abc", "extra": {"unknown": [1, 2]}}');

-- An accepted create without an id, or unreadable, fails: never sent twice.
SELECT kling_parse_response('create', 200, '{"status": "queued"}');
SELECT kling_parse_response('create', 201, '{"id": "abc", "status": ');

-- Poll: completed with the video URL, whatever else "video" holds.
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "completed",
    "video": {"url": "https://cdn.example/output.mp4", "content_type": "video/mp4",
              "file_name": "output.mp4", "file_size": 15676617},
    "error": null, "meta": {"usage": {"credits_used": 123}}}');
SELECT kling_parse_response('poll', 200,
    '{"id": "g1", "status": "completed", "video": {"url": "https://cdn.example/o.mp4"}}');
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "completed", "video": null}');

-- Non-final statuses, old and unknown ones included, are progress.
SELECT s AS status,
       kling_parse_response('poll', 200, format('{"id": "g1", "status": "%s", "video": null}', s))
           ->> 'state' AS state
FROM unnest(ARRAY['queued', 'waiting', 'generating', 'active', 'processing', 'rendering']) s;

-- Provider errors of every shape give a readable message.
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "error",
    "error": {"name": "ModerationError", "message": "Prompt rejected by moderation"}}') ->> 'message';
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "error",
    "error": {"detail": [{"loc": ["body", "image_url"], "msg": "Could not detect face", "type": "value_error"}]}}') ->> 'message';
SELECT kling_parse_response('poll', 200,
    '{"id": "g1", "status": "error", "error": "Internal generation failure"}') ->> 'message';
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "error", "error": null}') ->> 'message';
SELECT kling_parse_response('poll', 200,
    '{"id": "g1", "status": "error", "error": {"code": 7}}') ->> 'message';

-- A poll without a status, unreadable, or not an object is retried.
SELECT kling_parse_response('poll', 200, '{"id": "g1"}');
SELECT kling_parse_response('poll', 200, '{"id": "g1", "status": "gener');
SELECT kling_parse_response('poll', 200, '[1, 2, 3]');
SELECT kling_parse_response('poll', 200, '');
-- Hostile nesting is a bad response, not a crash.
SELECT kling_parse_response('poll', 200, repeat('[', 100000)) ->> 'outcome';

-- HTTP errors follow the provider's error table.  A create is retried only
-- after an answer that proves the provider refused it (a 3xx or 4xx, 503);
-- after a 500, 502, 504 or anything else its outcome is unknown.
SELECT code, kind, r ->> 'outcome' AS outcome, r -> 'counts_attempt' AS counts,
       r ->> 'message' AS message
FROM (VALUES (301, 'create'), (301, 'poll'), (400, 'create'), (401, 'create'),
             (403, 'poll'), (404, 'create'), (404, 'poll'), (409, 'create'),
             (429, 'create'), (500, 'create'), (500, 'poll'), (502, 'create'),
             (503, 'create'), (503, 'poll'), (504, 'create'), (504, 'poll'),
             (599, 'create')) AS t(code, kind),
     LATERAL kling_parse_response(kind, code, format(
         '{"message": "provider says %s", "path": "/v2/x", "requestId": "r1", "statusCode": %s, "timestamp": "2025-01-01T00:00:00Z"}',
         code, code)) r
ORDER BY code, kind;

-- A 400 may carry validation detail instead of a message.
SELECT kling_parse_response('create', 400,
    '{"detail": [{"loc": ["body", "duration"], "msg": "Input should be 5 or 10"}]}') ->> 'message';
-- Error bodies that are not JSON still give a reason.
SELECT kling_parse_response('poll', 502, '<html>Bad gateway</html>') ->> 'message';

-- Retry-After in seconds or as an HTTP date (one in the past means now).
SELECT kling_parse_response('create', 429, '{"message": "slow down"}', '7') -> 'retry_after_ms';
SELECT kling_parse_response('create', 429, '{"message": "slow down"}',
                            'Wed, 21 Oct 2015 07:28:00 GMT') -> 'retry_after_ms';
SELECT kling_parse_response('create', 429, '{"message": "slow down"}') -> 'retry_after_ms';

-- Untrusted text is cleaned and bounded in messages.
SELECT length(kling_parse_response('poll', 200, jsonb_build_object('status', 'error',
    'error', jsonb_build_object('message', repeat('x', 5000) || E'\n'))::text) ->> 'message');
SELECT kling_parse_response('poll', 200,
    '{"status": "error", "error": {"message": "line one\nline two"}}') ->> 'message';
SELECT kling_parse_response('ping', 200, '{}');
