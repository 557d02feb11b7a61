#!/usr/bin/python3
"""mock_api.py - a loopback mock of the AI/ML API's Kling video API

The test suites point the extension at this server instead of
https://api.aimlapi.com.  It simulates what docs/API.md describes:

  * both route pairs: POST /v2/generate/video/kling/generation (201) and
    POST /v2/video/generations (200) create a task; GET on the same path
    with ?generation_id=<id> polls it;
  * every Kling model of the family, with its own rules (required and
    accepted fields, image URLs and data URLs, the routes that serve it):
    a body the provider would refuse is a 400, a model's generation polled
    on a route that does not serve it a 404;
  * the bearer token check (401), body validation (400), unknown ids (404),
    and NestJS-style error bodies {message, path, requestId, statusCode,
    timestamp};
  * opaque generation ids in several styles, named "id" or "generation_id";
  * tasks that move queued -> generating -> completed | error on a schedule
    scaled down from the provider's real minutes to seconds;
  * extra unknown keys in every response, so the client must ignore them;
  * per-task outcomes chosen by tags in the prompt, so concurrent tests do
    not interfere: [error], [error:detail], [error:string], [nourl], [bad400];
    [longurl:N] makes the completed video URL N characters long (N up to
    1,000,000; a URL that long is still a plain https URL);
  * the videos themselves, when video_base is not the default: see "Media"
    below;
  * faults injected on demand (status codes, stalls, drops, truncated or
    malformed or oversized bodies, create-then-drop).

Control API (no auth; every answer is one line of JSON plus a newline, so a
test can read it with COPY ... FROM PROGRAM 'curl -s ...'; add ?ascii=0 to
get non-ASCII characters raw instead of \\u escapes):

  GET    /__mock/health          {"ok": true}
  GET    /__mock/config          current settings
  POST   /__mock/config          merge settings: time_scale, durations,
                                 fixed_seconds, id_style, id_key,
                                 video_shape, status_words, api_key,
                                 idle_timeout (s; keep-alive connections
                                 idle this long are closed silently),
                                 video_base, url_expiry_seconds (see Media)
  POST   /__mock/faults          append a rule (or a list of rules):
                                 {"route": "create"|"poll"|"any", "kind": K,
                                  "count": N, "retry_after": "...",
                                  "stall_seconds": S}
  GET    /__mock/faults          pending rules
  DELETE /__mock/faults          clear rules
  POST   /__mock/reset           forget tasks, rules, counters, bodies and
                                 restore the default settings
  GET    /__mock/stats           counters: creates, create_requests, polls,
                                 responses_by_status, in_flight,
                                 max_in_flight, creates_by_prompt,
                                 duplicate_creates, unknown_body_keys,
                                 auth_failures, max_concurrent_connections,
                                 faults_served, tasks, faults_pending,
                                 active_requests, and for Media:
                                 media_requests, media_bytes_sent,
                                 media_with_auth (requests that carried an
                                 Authorization header), media_broken
                                 (transfers cut on purpose by [break]),
                                 media_concurrent_max, media_active
  GET    /__mock/bodies[?prompt=P]  every create request, in arrival order:
                                 body (parsed), prompt, prompt_utf8_hex,
                                 raw_body, accepted, status, error, fault, id,
                                 image (kind url|data, mime, bytes, sha256)
  GET    /__mock/tasks           tasks with their status now
  GET    /__mock/media/<safe_id> {"size": N, "sha256": "<hex>"} of the
                                 video (hashed by streaming it; ~1 s for
                                 200 MB); 404 for an unknown id

Fault kinds: 400 401 403 404 429 500 502 503 504 (error bodies; 429 sends
Retry-After only when the rule gives one), stall, drop, drop_mid_body,
malformed, oversized, create_then_drop, create_then_stall, slow.  A faulted
request skips the auth check and creates nothing, except create_then_*,
which run the normal create first, and slow, which waits stall_seconds
(give it: the default is an hour) and then answers normally, as a provider
that is slow to answer but does its work (a slow create creates its task
when it answers, even if the client gave up meanwhile).  "mixed" settings rotate by task number:
id_key alternates id/generation_id, id_style changes every two tasks, and
create bodies carry "meta" on every third task.

Media.  Every task has a video whose bytes are derived from its id alone
(the same bytes on every request and in every run of the mock), made on
the fly in 1 MiB pieces, so a 2 GB video is never held in memory (each
1 MiB piece starts with an 8-byte big-endian word, its offset XOR a
per-task key, followed by a per-task, per-piece rotation of one fixed
1 MiB random block).  Config keys:

  video_base          "https://cdn.mock.invalid" (default): video URLs are
                      https://cdn.mock.invalid/<safe_id>/output.mp4, as
                      before, and unreachable.
                      "self": http://<Host of the poll request>/__media/
                      <safe_id>/output.mp4, i.e. the mock itself (the
                      server address when the request had no Host).
                      Any other string B: B/__media/<safe_id>/output.mp4
                      (B with trailing slashes removed), e.g.
                      "http://localhost:PORT" to reach the mock by name.
  url_expiry_seconds  null (default), or S >= 0: video URLs get the query
                      ?Expires=<unix time of the poll + S, integer>
                      &Signature=<40 hex, fake>; the media route ignores
                      the query (it never refuses an expired URL).

<safe_id> is the generation id with every character outside
[A-Za-z0-9_-] replaced by "_".  The media route:

  GET|HEAD /__media/<safe_id>/output.mp4
      no auth needed (whether an Authorization header came is counted in
      media_with_auth); 200 with Content-Type video/mp4, Content-Length,
      Accept-Ranges: none (Range is ignored; the answer is always whole).
      The video of any task of the mock is served, whatever its status.
      Unknown id or other file name: 404; other methods: 405 (both with
      a JSON error body).  Media answers are not counted in
      responses_by_status, active_requests or max_concurrent_connections.

Media tags in the prompt (per task; "media requests" counts GET and HEAD
on the task's media path, "transfers" counts GETs that get a 200):

  [size:N]        the video is N bytes; N may end in k, m or g (x1024,
                  x1024^2, x1024^3; case-insensitive); at most 2 GiB
                  (2147483648, larger is clamped).  No tag: 1 MiB
                  (1048576).  The poll's video.file_size is this size
                  (when video_shape gives file_size).
  [break:K]       the first transfer sends the headers (full
                  Content-Length) and K bytes (at most size - 1), then
                  closes the connection; later transfers are whole.
  [break:K:T]     the same for the first T transfers.
  [slowmedia:R]   transfers stream at about R bytes/second (R >= 1).
  [redirect:URL]  every media request answers 302 with Location: URL
                  (URL is everything up to the first "]"; any string,
                  e.g. file:///etc/passwd or http://10.0.0.1/x;
                  characters outside printable ASCII are %-escaped).
  [media500:T]    the first T media requests answer 500, later ones
                  proceed normally.

Order: unknown id (404), then [media500], then [redirect], then the 200
answer ([break] and [slowmedia] apply to it).

Usage:
  /usr/bin/python3 test/mock_api.py --host 127.0.0.1 --port 0 \\
      --port-file PATH [--api-key KEY] [--verbose]

Standard library only (Python 3.11).
"""

import argparse
import base64
import datetime
import hashlib
import json
import math
import os
import random
import re
import secrets
import select
import signal
import socket
import string
import sys
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Create route -> its success status; the poll route is the same path.
CREATE_ROUTES = {
    "/v2/generate/video/kling/generation": 201,
    "/v2/video/generations": 200,
}
ROUTE_NAMES = {"/v2/generate/video/kling/generation": "generation",
               "/v2/video/generations": "unified"}
# The provider's per-model schemas: model -> (routes, required, accepted).
SEED_TEXT = {"prompt", "negative_prompt", "aspect_ratio", "duration",
             "cfg_scale", "camera_control", "external_task_id"}
TEXT = {"prompt", "negative_prompt", "aspect_ratio", "duration", "cfg_scale"}
IMAGE = {"image_url", "prompt", "negative_prompt", "duration", "cfg_scale"}
MASKS = {"static_mask", "dynamic_masks"}
BOTH = ("generation", "unified")
UNIFIED = ("unified",)
MODELS = {
    "klingai/v2.1-master-text-to-video": (BOTH, {"prompt"}, SEED_TEXT),
    "klingai/v2-master-text-to-video": (BOTH, {"prompt"}, SEED_TEXT),
    "kling-video/v1.6/standard/text-to-video": (BOTH, {"prompt"}, SEED_TEXT),
    "kling-video/v1.6/pro/text-to-video": (BOTH, {"prompt"}, SEED_TEXT),
    "klingai/v2.5-turbo/pro/text-to-video": (UNIFIED, {"prompt"}, TEXT),
    "klingai/video-v2-6-pro-text-to-video":
        (UNIFIED, {"prompt"}, TEXT | {"generate_audio"}),
    "klingai/v2.1-master-image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | MASKS),
    "kling-video/v2.1/pro/image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | MASKS),
    "kling-video/v2.1/standard/image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | MASKS),
    "klingai/v2-master-image-to-video": (UNIFIED, {"image_url"}, IMAGE | MASKS),
    "klingai/v2.5-turbo/pro/image-to-video":
        (UNIFIED, {"image_url", "prompt"}, IMAGE),
    "klingai/video-v2-6-pro-image-to-video":
        (UNIFIED, {"image_url", "prompt"},
         IMAGE | {"generate_audio", "tail_image_url"}),
    "kling-video/v1.6/pro/image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | {"tail_image_url"}),
    "kling-video/v1/pro/image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | {"tail_image_url"}),
    "kling-video/v1/standard/image-to-video":
        (UNIFIED, {"image_url"}, IMAGE | {"tail_image_url"}),
}
DATA_URL = re.compile(r"data:(image/(?:png|jpeg|webp));base64,([A-Za-z0-9+/]*={0,2})\Z")
IMAGE_MAGIC = {"image/png": (0, b"\x89PNG\r\n\x1a\n"), "image/jpeg": (0, b"\xff\xd8\xff"),
               "image/webp": (8, b"WEBP")}
MAX_IMAGE_BYTES = 10 * 1024 * 1024
ASPECT_RATIOS = ("16:9", "9:16", "1:1")
CAMERA_CONTROLS = ("down_back", "forward_up", "right_turn_forward",
                   "left_turn_forward")
KNOWN_BODY_KEYS = {"model"}.union(*(m[2] for m in MODELS.values()))
MAX_PROMPT_CHARS = 2500
MAX_BODY_BYTES = 16 * 1024 * 1024

ID_STYLES = ("uuid_suffix", "uuid", "numeric", "random21")
ID_SUFFIX = ":kling-video/v2.1/master/text-to-video"
RANDOM21_ALPHABET = string.ascii_letters + string.digits + "_-"
LEGACY_PENDING_WORDS = ("waiting", "active", "processing")

CREDITS = {5: 1207500, 10: 2415000}
CREDITS_PER_USD = 2_100_000

# Status faults: kind -> (HTTP status, message).
STATUS_FAULTS = {
    "400": (400, "Invalid request body"),
    "401": (401, "Invalid API key"),
    "403": (403, "Insufficient credits: top up your balance"),
    "404": (404, "Generation not found"),
    "429": (429, "Too many requests: concurrency limit reached"),
    "500": (500, "Internal server error"),
    "502": (502, "Bad gateway"),
    "503": (503, "Service temporarily unavailable"),
    "504": (504, "Generation timeout"),
}
OTHER_FAULTS = {"stall", "drop", "drop_mid_body", "malformed", "oversized",
                "create_then_drop", "create_then_stall", "slow"}
CREATE_ONLY_FAULTS = {"create_then_drop", "create_then_stall"}
MALFORMED_BODY = b'{"id": "x", "status": '
LONG_URL_TAG = re.compile(r"\[longurl:(\d{1,7})\]")
MAX_LONG_URL = 1_000_000
OVERSIZED_PADDING = 2 * 1024 * 1024

# Media (the videos themselves); see the module docstring.
DEFAULT_VIDEO_BASE = "https://cdn.mock.invalid"
MEDIA_PATH = re.compile(r"/__media/([A-Za-z0-9_-]+)/output\.mp4\Z")
MEDIA_CONTROL_PREFIX = "/__mock/media/"
SIZE_TAG = re.compile(r"\[size:(\d{1,12})([kKmMgG]?)\]")
BREAK_TAG = re.compile(r"\[break:(\d{1,12})(?::(\d{1,9}))?\]")
SLOW_MEDIA_TAG = re.compile(r"\[slowmedia:(\d{1,12})\]")
REDIRECT_TAG = re.compile(r"\[redirect:([^\]]+)\]")
MEDIA500_TAG = re.compile(r"\[media500:(\d{1,9})\]")
SIZE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
DEFAULT_MEDIA_SIZE = 1 << 20
MAX_MEDIA_SIZE = 1 << 31
MEDIA_PIECE = 1 << 20           # bytes generated (and written) at a time
MEDIA_BLOCK = hashlib.shake_256(b"mock_api media block").digest(MEDIA_PIECE)
MEDIA_BLOCK2 = memoryview(MEDIA_BLOCK * 2)  # so a rotation is one slice
MEDIA_STRIDE = 104729           # rotation step from one piece to the next
LOCATION_SAFE = "".join(chr(c) for c in range(33, 127))


def default_config(api_key):
    """Settings restored by /__mock/reset; durations are provider seconds."""
    return {
        "time_scale": 0.005,
        "durations": {"5": [300.0, 360.0], "10": [660.0, 840.0]},
        "fixed_seconds": None,
        "id_style": "uuid_suffix",
        "id_key": "id",
        "video_shape": "full",
        "status_words": "standard",
        "api_key": api_key,
        "idle_timeout": 300.0,
        "video_base": DEFAULT_VIDEO_BASE,
        "url_expiry_seconds": None,
    }


def is_number(value):
    """A JSON number: int or finite float, but not a bool."""
    if type(value) is int:
        return True
    return type(value) is float and math.isfinite(value)


def merge_config(config, update):
    """Return config merged with update, or raise ValueError naming the key."""
    if not isinstance(update, dict):
        raise ValueError("config must be a JSON object")
    new = json.loads(json.dumps(config))
    choices = {"id_style": ID_STYLES + ("mixed",),
               "id_key": ("id", "generation_id", "mixed"),
               "video_shape": ("full", "url_only", "mixed"),
               "status_words": ("standard", "legacy")}
    for key, value in update.items():
        if key in choices:
            if value not in choices[key]:
                raise ValueError(f"{key} must be one of {list(choices[key])}")
        elif key == "time_scale":
            if not is_number(value) or value < 0:
                raise ValueError("time_scale must be a number >= 0")
        elif key == "fixed_seconds":
            if value is not None and (not is_number(value) or value < 0):
                raise ValueError("fixed_seconds must be null or a number >= 0")
        elif key == "idle_timeout":
            if not is_number(value) or value <= 0:
                raise ValueError("idle_timeout must be a number > 0")
        elif key == "api_key":
            if not isinstance(value, str):
                raise ValueError("api_key must be a string")
        elif key == "video_base":
            if not isinstance(value, str) or value == "":
                raise ValueError("video_base must be a non-empty string")
        elif key == "url_expiry_seconds":
            if value is not None and (not is_number(value) or value < 0):
                raise ValueError(
                    "url_expiry_seconds must be null or a number >= 0")
        elif key == "durations":
            value = merge_durations(new["durations"], value)
        else:
            raise ValueError(f"unknown config key {key!r}")
        new[key] = value
    return new


def merge_durations(current, update):
    """Merge {"5": [lo, hi], "10": [lo, hi]} ranges into current."""
    if not isinstance(update, dict):
        raise ValueError("durations must be an object")
    merged = dict(current)
    for key, pair in update.items():
        if key not in ("5", "10"):
            raise ValueError("durations keys must be \"5\" or \"10\"")
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(is_number(v) for v in pair)
                or not 0 <= pair[0] <= pair[1]):
            raise ValueError(
                f"durations[{key}] must be [lo, hi] with 0 <= lo <= hi")
        merged[key] = [float(pair[0]), float(pair[1])]
    return merged


def validate_fault(rule):
    """Normalise one fault rule, or raise ValueError."""
    if not isinstance(rule, dict):
        raise ValueError("a fault rule must be a JSON object")
    route = rule.get("route", "any")
    kind = str(rule.get("kind"))
    count = rule.get("count", 1)
    if route not in ("create", "poll", "any"):
        raise ValueError("route must be create, poll or any")
    if kind not in STATUS_FAULTS and kind not in OTHER_FAULTS:
        raise ValueError(f"unknown fault kind {kind!r}")
    if kind in CREATE_ONLY_FAULTS and route == "poll":
        raise ValueError(f"{kind} applies to the create route only")
    if type(count) is not int or count < 1:
        raise ValueError("count must be a positive integer")
    retry_after = rule.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, (str, int)):
        raise ValueError("retry_after must be a string")
    stall = rule.get("stall_seconds", 3600.0)
    if not is_number(stall) or stall < 0:
        raise ValueError("stall_seconds must be a number >= 0")
    return {"route": route, "kind": kind, "remaining": count,
            "retry_after": None if retry_after is None else str(retry_after),
            "stall_seconds": float(stall)}


def image_bytes(value):
    """The bytes of a data URL image, or None for an http(s) URL; raises
    ValueError for anything else, as the provider refuses it."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if value.lower().startswith(("http://", "https://")):
        return None
    match = DATA_URL.match(value)
    if not match:
        raise ValueError("must be an http(s) URL or a base64 image data URL")
    data = base64.b64decode(match.group(2), validate=True)
    offset, magic = IMAGE_MAGIC[match.group(1)]
    if data[offset:offset + len(magic)] != magic:
        raise ValueError(f"is not a {match.group(1)} image")
    if len(data) > MAX_IMAGE_BYTES:
        raise ValueError("is larger than 10 MB")
    return data


def valid_image(value):
    try:
        image_bytes(value)
        return True
    except ValueError:
        return False


def valid_masks(value):
    def point(p):
        return (isinstance(p, dict) and set(p) == {"x", "y"}
                and all(type(p[k]) is int for k in p))
    return (isinstance(value, list) and 1 <= len(value) <= 6 and all(
        isinstance(m, dict) and set(m) == {"mask", "trajectories"}
        and valid_image(m["mask"]) and isinstance(m["trajectories"], list)
        and 2 <= len(m["trajectories"]) <= 77
        and all(point(p) for p in m["trajectories"]) for m in value))


FIELD_CHECKS = (
    ("negative_prompt",
     lambda v: isinstance(v, str) and len(v) <= MAX_PROMPT_CHARS,
     f"must be a string of at most {MAX_PROMPT_CHARS} characters"),
    ("aspect_ratio", lambda v: isinstance(v, str) and v in ASPECT_RATIOS,
     "must be one of: " + ", ".join(ASPECT_RATIOS)),
    ("duration", lambda v: type(v) is int and v in (5, 10),
     "must be the integer 5 or 10"),
    ("cfg_scale", lambda v: is_number(v) and 0 <= v <= 1,
     "must be a number between 0 and 1"),
    ("camera_control",
     lambda v: isinstance(v, str) and v in CAMERA_CONTROLS,
     "must be one of: " + ", ".join(CAMERA_CONTROLS)),
    ("external_task_id", lambda v: isinstance(v, str), "must be a string"),
    ("image_url", valid_image, "must be an http(s) URL or an image data URL"),
    ("tail_image_url", valid_image,
     "must be an http(s) URL or an image data URL"),
    ("static_mask", valid_image, "must be an http(s) URL or an image data URL"),
    ("dynamic_masks", valid_masks,
     "must be 1 to 6 {mask, trajectories} objects"),
    ("generate_audio", lambda v: type(v) is bool, "must be a boolean"),
)


def validate_create(body, route):
    """Return an error message naming the bad field, or None if valid."""
    if "model" not in body:
        return "model is required"
    if not isinstance(body["model"], str) or body["model"] not in MODELS:
        return "model must be one of: " + ", ".join(MODELS)
    routes, required, accepted = MODELS[body["model"]]
    if route not in routes:
        return f"model {body['model']} is not served on this route"
    for key in sorted(required):
        if key not in body:
            return f"{key} is required for model {body['model']}"
    for key in body:
        if key in KNOWN_BODY_KEYS and key != "model" and key not in accepted:
            return f"{key} is not allowed for model {body['model']}"
    if "prompt" in body:
        prompt = body["prompt"]
        if not isinstance(prompt, str) or prompt == "":
            return "prompt must be a non-empty string"
        if len(prompt) > MAX_PROMPT_CHARS:
            return f"prompt must be at most {MAX_PROMPT_CHARS} characters"
    for key, ok, rule in FIELD_CHECKS:
        if key in body and not ok(body[key]):
            return f"{key} {rule}"
    return None


def image_summary(body):
    """What a create sent as its image, for /__mock/bodies."""
    value = body.get("image_url") if isinstance(body, dict) else None
    try:
        data = image_bytes(value)
    except ValueError:
        return None
    if data is None:
        return {"kind": "url", "url": value}
    return {"kind": "data", "mime": DATA_URL.match(value).group(1),
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def safe_id(task_id):
    """The generation id as it appears in video URLs."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", task_id)


def media_from_prompt(prompt):
    """The media tags of a prompt (see the module docstring)."""
    media = {"size": DEFAULT_MEDIA_SIZE, "break_bytes": None,
             "break_times": 0, "rate": None, "redirect": None,
             "fail500": 0}
    tag = SIZE_TAG.search(prompt)
    if tag:
        size = int(tag.group(1)) * SIZE_SUFFIXES[tag.group(2).lower()]
        media["size"] = min(size, MAX_MEDIA_SIZE)
    tag = BREAK_TAG.search(prompt)
    if tag:
        media["break_bytes"] = int(tag.group(1))
        media["break_times"] = int(tag.group(2) or 1)
    tag = SLOW_MEDIA_TAG.search(prompt)
    if tag and int(tag.group(1)) >= 1:
        media["rate"] = int(tag.group(1))
    tag = REDIRECT_TAG.search(prompt)
    if tag:
        media["redirect"] = urllib.parse.quote(tag.group(1),
                                               safe=LOCATION_SAFE)
    tag = MEDIA500_TAG.search(prompt)
    if tag:
        media["fail500"] = int(tag.group(1))
    return media


def media_seed(task_id):
    """(key, rotation): what makes a task's bytes its own."""
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:8], "big"),
            int.from_bytes(digest[8:16], "big") % MEDIA_PIECE)


def media_pieces(seed, start, end, step=MEDIA_PIECE):
    """Yield the bytes [start, end) of a video, at most step bytes at a
    time (bytes or memoryview).  Piece i of the video (offset i MiB) is
    8 bytes of (offset XOR key), big-endian, then MEDIA_BLOCK rotated by
    (rotation + i * MEDIA_STRIDE), cut to 1 MiB in all."""
    key, rotation = seed
    pos = start
    while pos < end:
        index, rel = divmod(pos, MEDIA_PIECE)
        base = index * MEDIA_PIECE
        stop = min(end, base + MEDIA_PIECE, pos + step)
        rel_end = stop - base
        rot = (rotation + index * MEDIA_STRIDE) % MEDIA_PIECE
        if rel >= 8:
            piece = MEDIA_BLOCK2[rot + rel - 8:rot + rel_end - 8]
        else:
            head = ((base ^ key) & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")
            piece = head[rel:min(rel_end, 8)]
            if rel_end > 8:
                piece += MEDIA_BLOCK2[rot:rot + rel_end - 8]
        yield piece
        pos = stop


def media_digest(task_id, size):
    sha = hashlib.sha256()
    for piece in media_pieces(media_seed(task_id), 0, size):
        sha.update(piece)
    return sha.hexdigest()


def outcome_from_prompt(prompt):
    """Per-task behaviour chosen by a tag in the prompt."""
    for tag in ("[error:detail]", "[error:string]", "[error]", "[nourl]"):
        if tag in prompt:
            return tag.strip("[]")
    return "completed"


def reject_constant(name):
    """json.loads would accept NaN and Infinity; JSON does not."""
    raise ValueError(f"invalid JSON constant {name}")


def iso_now():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_body(status, message, path):
    return {"message": message, "path": path, "requestId": str(uuid.uuid4()),
            "statusCode": status, "timestamp": iso_now()}


def final_status(task):
    return "error" if task.outcome.startswith("error") else "completed"


@dataclass
class Task:
    id: str
    seq: int
    prompt: str
    model: str
    duration: int
    route: str
    outcome: str
    created: float
    queued_until: float
    finish: float
    polls: int = 0
    media: dict = None          # media_from_prompt()
    media_requests: int = 0     # GET and HEAD on its media path
    media_transfers: int = 0    # GETs answered 200

    def phase(self, now):
        if now >= self.finish:
            return "final"
        return "queued" if now < self.queued_until else "generating"


class MockState:
    """All shared state; every access holds self.lock."""

    def __init__(self, api_key):
        self.lock = threading.Lock()
        self.cli_api_key = api_key
        self.shutdown_event = threading.Event()
        self.active_requests = 0
        self.media_active = 0
        self.reset()

    def reset(self):
        """Forget everything except the command-line api key."""
        self.config = default_config(self.cli_api_key)
        self.tasks = {}
        self.by_safe_id = {}
        self.faults = []
        self.bodies = []
        self.seq = 0
        self.legacy_turn = 0
        self.stats = {
            "creates": 0, "create_requests": 0, "polls": 0,
            "responses_by_status": {}, "max_in_flight": 0,
            "creates_by_prompt": {}, "unknown_body_keys": {},
            "auth_failures": 0, "max_concurrent_connections": 0,
            "faults_served": {},
            "media_requests": 0, "media_bytes_sent": 0,
            "media_with_auth": 0, "media_broken": 0,
            "media_concurrent_max": 0,
        }

    def bump(self, key, sub, n=1):
        table = self.stats[key]
        table[sub] = table.get(sub, 0) + n

    def take_fault(self, route):
        """Consume the first pending rule that matches route (FIFO)."""
        for rule in self.faults:
            if rule["kind"] in CREATE_ONLY_FAULTS and route != "create":
                continue
            if rule["route"] in ("any", route):
                rule["remaining"] -= 1
                if rule["remaining"] <= 0:
                    self.faults.remove(rule)
                self.bump("faults_served", rule["kind"])
                return dict(rule)
        return None

    def new_id(self):
        """A unique generation id in the configured style."""
        style = self.config["id_style"]
        if style == "mixed":            # every style with both id keys
            style = ID_STYLES[(self.seq // 2) % len(ID_STYLES)]
        while True:
            if style == "uuid_suffix":
                gid = str(uuid.uuid4()) + ID_SUFFIX
            elif style == "uuid":
                gid = str(uuid.uuid4())
            elif style == "numeric":
                gid = str(random.randint(10 ** 17, 10 ** 18 - 1))
            else:
                gid = "".join(secrets.choice(RANDOM21_ALPHABET)
                              for _ in range(21))
            if gid not in self.tasks:
                return gid

    def total_seconds(self, duration):
        """Real seconds from create to the final status."""
        fixed = self.config["fixed_seconds"]
        if fixed is not None:
            return float(fixed)
        lo, hi = self.config["durations"][str(duration)]
        return random.uniform(lo, hi) * self.config["time_scale"]

    def in_flight(self, now):
        return sum(1 for t in self.tasks.values() if t.finish > now)

    def create_task(self, body, route):
        duration = body.get("duration", 5)
        total = self.total_seconds(duration)
        now = time.time()
        task = Task(id=self.new_id(), seq=self.seq,
                    prompt=body.get("prompt", ""),
                    model=body["model"], duration=duration, route=route,
                    outcome=outcome_from_prompt(body.get("prompt", "")),
                    created=now, queued_until=now + 0.2 * total,
                    finish=now + total,
                    media=media_from_prompt(body.get("prompt", "")))
        self.seq += 1
        self.tasks[task.id] = task
        self.by_safe_id[safe_id(task.id)] = task.id
        self.stats["creates"] += 1
        self.bump("creates_by_prompt", task.prompt)
        # in_flight only grows at a create, so its peak is seen here.
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"],
                                          self.in_flight(now))
        return task

    def status_word(self, phase):
        if phase == "final" or self.config["status_words"] == "standard":
            return phase
        word = LEGACY_PENDING_WORDS[self.legacy_turn % 3]
        self.legacy_turn += 1
        return word

    def video_url(self, task, self_base, now):
        safe = safe_id(task.id)
        base = self.config["video_base"]
        if base == DEFAULT_VIDEO_BASE:
            url = f"{base}/{safe}/output.mp4"
        else:
            if base == "self":
                base = self_base
            url = f"{base.rstrip('/')}/__media/{safe}/output.mp4"
        expiry = self.config["url_expiry_seconds"]
        if expiry is not None:
            expires = int(now + expiry)
            signature = hashlib.sha1(
                f"{safe}:{expires}".encode()).hexdigest()
            url += f"?Expires={expires}&Signature={signature}"
        return url

    def video(self, task, self_base, now):
        url = self.video_url(task, self_base, now)
        tag = LONG_URL_TAG.search(task.prompt)
        if tag:                 # [longurl:N]: pad the URL to N characters
            want = min(int(tag.group(1)), MAX_LONG_URL)
            if want > len(url) + 5:
                url += (("&" if "?" in url else "?") + "pad="
                        + "p" * (want - len(url) - 5))
        shape = self.config["video_shape"]
        if shape == "mixed":
            shape = "url_only" if task.seq % 3 == 2 else "full"
        if shape == "url_only":
            return {"url": url}
        return {"url": url, "content_type": "video/mp4",
                "file_name": "output.mp4", "file_size": task.media["size"],
                "duration": task.duration}

    def poll_body(self, task, now, self_base):
        phase = task.phase(now)
        status, video, error, credits = phase, None, None, 0
        if phase == "final":
            status = final_status(task)
            if task.outcome == "completed":
                video = self.video(task, self_base, now)
            if task.outcome == "error":
                error = {"name": "ModerationError",
                         "message": "Prompt rejected by moderation"}
            elif task.outcome == "error:detail":
                error = {"detail": [{"loc": ["body", "prompt"],
                                     "msg": "Could not detect face",
                                     "type": "value_error"}]}
            elif task.outcome == "error:string":
                error = "Internal generation failure"
            if status == "completed":
                credits = CREDITS[task.duration]
        else:
            status = self.status_word(phase)
        return {"id": task.id, "status": status, "video": video,
                "error": error, "meta": {"usage": {"credits_used": credits}},
                "x_mock": {"nested": [1, 2], "polls": task.polls},
                "updated_at": int(now), "model": task.model}

    def create_body(self, task, status):
        key = self.config["id_key"]
        if key == "mixed":
            key = "id" if task.seq % 2 == 0 else "generation_id"
        body = {key: task.id, "status": status,
                "x_mock": {"nested": [1, 2]}, "created_at": int(task.created)}
        if task.seq % 3 == 1:                   # "sometimes"
            body["meta"] = {"usage": {"credits_used": CREDITS[task.duration]}}
        return body

    def task_row(self, task, now):
        phase = task.phase(now)
        if phase == "final":
            phase = final_status(task)
        return {"id": task.id, "prompt": task.prompt, "status": phase,
                "outcome": task.outcome, "duration": task.duration,
                "model": task.model, "route": task.route,
                "created": task.created, "queued_until": task.queued_until,
                "finish": task.finish, "polls": task.polls}

    def stats_snapshot(self):
        snap = json.loads(json.dumps(self.stats))
        snap["in_flight"] = self.in_flight(time.time())
        snap["duplicate_creates"] = sum(
            1 for n in self.stats["creates_by_prompt"].values() if n > 1)
        snap["tasks"] = len(self.tasks)
        snap["faults_pending"] = len(self.faults)
        snap["active_requests"] = self.active_requests
        snap["media_active"] = self.media_active
        return snap


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict


def json_reply(status, obj, headers=None):
    return Reply(status, json.dumps(obj).encode(), headers or {})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Without it, Nagle's algorithm holds each body ~40 ms on a reused
    # connection (waiting for the client's delayed ACK).
    disable_nagle_algorithm = True
    server_version = "mock-aimlapi/1.0"
    sys_version = ""

    def handle(self):
        """Serve requests on one connection; close it when idle too long
        (config idle_timeout, seconds), silently, as servers do."""
        self.close_connection = False
        while not self.close_connection:
            with self.state.lock:
                idle = self.state.config["idle_timeout"]
            self.connection.settimeout(idle)
            self.handle_one_request()

    def version_string(self):
        return self.server_version

    @property
    def state(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("mock_api: %s %s\n" % (self.address_string(),
                                                     fmt % args))

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_HEAD(self):
        # Only the media route knows HEAD; elsewhere answer as before (as
        # BaseHTTPRequestHandler does for a method without do_*).
        if urllib.parse.urlsplit(self.path).path.startswith("/__media/"):
            self.dispatch("HEAD")
        else:
            self.send_error(501, "Unsupported method (%r)" % self.command)

    # ---- plumbing ----

    def read_body(self):
        """Read the whole request body so keep-alive stays in step."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY_BYTES:
            raise ValueError("bad Content-Length")
        return self.rfile.read(length)

    def read_chunked(self):
        parts, total = [], 0
        while True:
            size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass                # skip trailers
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ValueError("body too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(16)

    def send_reply(self, reply, provider=True):
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)
        if provider:
            with self.state.lock:
                self.state.bump("responses_by_status", str(reply.status))

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            raw = self.read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self.send_reply(json_reply(400, error_body(
                400, "Unreadable request body", self.url_path),
                {"Connection": "close"}), False)
            return
        if self.url_path.startswith("/__mock/"):
            self.handle_control(method, raw)
        elif self.url_path.startswith("/__media/"):
            self.handle_media(method)
        else:
            self.handle_provider(method, raw)

    # ---- provider API ----

    def handle_provider(self, method, raw):
        state = self.state
        with state.lock:
            state.active_requests += 1
            state.stats["max_concurrent_connections"] = max(
                state.stats["max_concurrent_connections"],
                state.active_requests)
        try:
            self.serve_provider(method, raw)
        finally:
            with state.lock:
                state.active_requests -= 1

    def serve_provider(self, method, raw):
        route = None
        if self.url_path in CREATE_ROUTES:
            route = {"POST": "create", "GET": "poll"}.get(method)
        with self.state.lock:
            if route == "create":
                self.state.stats["create_requests"] += 1
            elif route == "poll":
                self.state.stats["polls"] += 1
            fault = self.state.take_fault(route) if route else None
        if fault and fault["kind"] == "slow":
            # Late but normal: wait, then answer as if there were no fault.
            self.state.shutdown_event.wait(fault["stall_seconds"])
            fault = None
        if fault and fault["kind"] not in CREATE_ONLY_FAULTS:
            if route == "create":
                self.record_create(raw, fault=fault["kind"])
            self.serve_fault(fault, route)
            return
        reply = self.normal_reply(method, route, raw)
        if fault is None:
            self.send_reply(reply)
        elif fault["kind"] == "create_then_drop":
            self.close_connection = True
        else:
            self.stall(fault["stall_seconds"])

    def normal_reply(self, method, route, raw):
        auth = self.headers.get("Authorization")
        with self.state.lock:
            ok = auth == "Bearer " + self.state.config["api_key"]
            if not ok:
                self.state.stats["auth_failures"] += 1
        if not ok:
            if route == "create":
                self.record_create(raw, error="unauthorized", status=401)
            return self.error_reply(401, "Invalid API key")
        if route == "create":
            return self.create(raw)
        if route == "poll":
            return self.poll()
        return self.error_reply(404, f"Cannot {method} {self.url_path}")

    def error_reply(self, status, message, headers=None):
        return json_reply(status, error_body(status, message, self.url_path),
                          headers)

    def parse_create(self, raw):
        """Return (body, error message); body is None if unparseable."""
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return None, "Content-Type must be application/json"
        try:
            body = json.loads(raw.decode("utf-8"),
                              parse_constant=reject_constant)
        except ValueError:      # includes UnicodeDecodeError
            return None, "Body must be valid UTF-8 JSON"
        if not isinstance(body, dict):
            return body, "Body must be a JSON object"
        return body, validate_create(body, ROUTE_NAMES[self.url_path])

    def record_create(self, raw, fault=None, error=None, status=None,
                      task_id=None):
        """Remember a create body for /__mock/bodies; count unknown keys."""
        try:
            body = json.loads(raw.decode("utf-8"),
                              parse_constant=reject_constant)
        except (UnicodeDecodeError, ValueError):
            body = None
        prompt = body.get("prompt") if isinstance(body, dict) else None
        entry = {
            "time": time.time(), "path": self.url_path, "fault": fault,
            "accepted": task_id is not None, "status": status,
            "error": error, "id": task_id, "body": body,
            "prompt": prompt if isinstance(prompt, str) else None,
            "image": image_summary(body),
            "prompt_utf8_hex": (prompt.encode("utf-8", "surrogatepass").hex()
                                if isinstance(prompt, str) else None),
            "content_type": self.headers.get("Content-Type"),
            "raw_body": raw.decode("utf-8", "replace"),
        }
        with self.state.lock:
            entry["seq"] = len(self.state.bodies)
            self.state.bodies.append(entry)
            if isinstance(body, dict):
                for key in body:
                    if key not in KNOWN_BODY_KEYS:
                        self.state.bump("unknown_body_keys", key)

    def create(self, raw):
        body, error = self.parse_create(raw)
        if error is None and "[bad400]" in body.get("prompt", ""):
            error = "Prompt violates content policy"
        if error is not None:
            self.record_create(raw, error=error, status=400)
            return self.error_reply(400, error)
        status = CREATE_ROUTES[self.url_path]
        state = self.state
        with state.lock:
            task = state.create_task(body, self.url_path)
            word = "queued"
            if state.config["status_words"] == "legacy":
                word = LEGACY_PENDING_WORDS[0]
            reply_body = state.create_body(task, word)
        self.record_create(raw, status=status, task_id=task.id)
        credits = CREDITS[task.duration]
        return json_reply(status, reply_body, {
            "x-inference-id": task.id,
            "x-aimlapi-credits-used": str(credits),
            "x-aimlapi-usd-spent": f"{credits / CREDITS_PER_USD:.6f}"})

    def poll(self, count=True):
        ids = self.query.get("generation_id")
        if not ids or ids[0] == "":
            return self.error_reply(400, "generation_id is required")
        with self.state.lock:
            task = self.state.tasks.get(ids[0])
            # A model's generations are found only on routes that serve it.
            if (task is None or ROUTE_NAMES[self.url_path]
                    not in MODELS[task.model][0]):
                return self.error_reply(404, "Generation not found")
            if count:
                task.polls += 1
            body = self.state.poll_body(task, time.time(), self.self_base())
        return json_reply(200, body)

    def self_base(self):
        """http://host:port of this request, for video_base "self"."""
        host = (self.headers.get("Host") or "").strip()
        if not host or any(c in host for c in "/\\@?# \t"):
            addr, port = self.server.server_address[:2]
            if ":" in addr:
                addr = f"[{addr}]"
            host = f"{addr}:{port}"
        return "http://" + host

    # ---- media ----

    def handle_media(self, method):
        state = self.state
        with state.lock:
            state.stats["media_requests"] += 1
            if self.headers.get("Authorization") is not None:
                state.stats["media_with_auth"] += 1
            state.media_active += 1
            state.stats["media_concurrent_max"] = max(
                state.stats["media_concurrent_max"], state.media_active)
        try:
            self.serve_media(method)
        except OSError:                 # the client hung up
            self.close_connection = True
        finally:
            with state.lock:
                state.media_active -= 1

    def media_reply(self, method, status, message, headers=None):
        """A media error answer: JSON body, none for HEAD."""
        body = json.dumps(error_body(status, message, self.url_path)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def serve_media(self, method):
        state = self.state
        match = MEDIA_PATH.match(self.url_path)
        if method not in ("GET", "HEAD"):
            self.media_reply(method, 405, f"Cannot {method} {self.url_path}",
                             {"Allow": "GET, HEAD"})
            return
        with state.lock:
            task = None
            if match:
                task = state.tasks.get(state.by_safe_id.get(match.group(1)))
            if task is not None:
                media = task.media
                task.media_requests += 1
                fail = task.media_requests <= media["fail500"]
                cut = None
                if not fail and media["redirect"] is None and method == "GET":
                    task.media_transfers += 1
                    if (media["break_bytes"] is not None
                            and task.media_transfers <= media["break_times"]):
                        cut = min(media["break_bytes"],
                                  max(media["size"] - 1, 0))
        if task is None:
            self.media_reply(method, 404, "Video not found")
            return
        if fail:
            self.media_reply(method, 500, "Internal server error")
            return
        if media["redirect"] is not None:
            self.send_response(302)
            self.send_header("Location", media["redirect"])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        size = media["size"]
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(size))
        self.send_header("Accept-Ranges", "none")
        self.end_headers()
        if method == "HEAD":
            return
        self.stream_media(task.id, size if cut is None else cut,
                          media["rate"])
        if cut is not None:
            self.close_connection = True        # a broken transfer
            with state.lock:
                state.stats["media_broken"] += 1

    def stream_media(self, task_id, end, rate):
        """Write bytes [0, end) of the video, at about rate bytes/s if
        rate is set; raises OSError if the client hangs up."""
        step = MEDIA_PIECE if rate is None else max(1, min(MEDIA_PIECE,
                                                           rate // 10))
        started = time.monotonic()
        sent = 0
        for piece in media_pieces(media_seed(task_id), 0, end, step):
            if rate is not None:
                wait = started + sent / rate - time.monotonic()
                if wait > 0 and self.state.shutdown_event.wait(wait):
                    raise ConnectionAbortedError("mock shutting down")
            self.wfile.write(piece)
            sent += len(piece)
            with self.state.lock:
                self.state.stats["media_bytes_sent"] += len(piece)

    # ---- faults ----

    def serve_fault(self, fault, route):
        kind = fault["kind"]
        if kind in STATUS_FAULTS:
            status, message = STATUS_FAULTS[kind]
            headers = {}
            if status == 429 and fault["retry_after"] is not None:
                headers["Retry-After"] = fault["retry_after"]
            self.send_reply(self.error_reply(status, message, headers))
        elif kind == "stall":
            self.stall(fault["stall_seconds"])
        elif kind == "drop":
            self.close_connection = True
        elif kind == "drop_mid_body":
            self.drop_mid_body(self.fake_reply(route))
        elif kind == "malformed":
            self.send_reply(Reply(200, MALFORMED_BODY, {}))
        elif kind == "oversized":
            reply = self.fake_reply(route)
            body = json.loads(reply.body)
            body["x_mock_padding"] = "x" * OVERSIZED_PADDING
            self.send_reply(json_reply(200, body))

    def fake_reply(self, route):
        """A plausible 200 body that changes no state (no task created)."""
        if route == "poll":
            reply = self.poll(count=False)
            if reply.status == 200:
                return reply
        with self.state.lock:
            gid = self.state.new_id()
        return json_reply(200, {"id": gid, "status": "queued",
                                "x_mock": {"nested": [1, 2]}})

    def stall(self, seconds):
        """Send nothing; end early if the server shuts down or the client
        hangs up, so abandoned stalls do not pin threads for an hour."""
        self.close_connection = True
        deadline = time.monotonic() + seconds
        poller = select.poll()          # poll, not select: fds may be > 1024
        poller.register(self.connection, select.POLLIN)
        while not self.state.shutdown_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if poller.poll(min(left, 0.2) * 1000):
                try:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        return          # client closed its end
                except OSError:
                    return
                # Pipelined bytes: we never read them; just keep waiting.
                self.state.shutdown_event.wait(min(left, 0.2))

    def drop_mid_body(self, reply):
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body[:len(reply.body) // 2])
        self.wfile.flush()
        self.close_connection = True

    # ---- control API ----

    def send_control(self, status, obj):
        ascii_only = self.query.get("ascii", ["1"])[0] != "0"
        text = json.dumps(obj, ensure_ascii=ascii_only) + "\n"
        self.send_reply(Reply(status, text.encode("utf-8"), {}), False)

    def handle_control(self, method, raw):
        routes = {
            ("GET", "/__mock/health"): lambda: {"ok": True},
            ("GET", "/__mock/config"): self.get_config,
            ("POST", "/__mock/config"): lambda: self.post_config(raw),
            ("GET", "/__mock/faults"): self.get_faults,
            ("POST", "/__mock/faults"): lambda: self.post_faults(raw),
            ("DELETE", "/__mock/faults"): self.clear_faults,
            ("POST", "/__mock/reset"): self.reset,
            ("GET", "/__mock/stats"): self.get_stats,
            ("GET", "/__mock/bodies"): self.get_bodies,
            ("GET", "/__mock/tasks"): self.get_tasks,
        }
        action = routes.get((method, self.url_path))
        if method == "GET" and self.url_path.startswith(MEDIA_CONTROL_PREFIX):
            self.media_info(self.url_path[len(MEDIA_CONTROL_PREFIX):])
            return
        if action is None:
            message = f"no control route {method} {self.url_path}"
            self.send_control(404, {"ok": False, "error": message})
            return
        try:
            self.send_control(200, action())
        except ValueError as exc:
            self.send_control(400, {"ok": False, "error": str(exc)})

    def media_info(self, safe):
        with self.state.lock:
            task = self.state.tasks.get(self.state.by_safe_id.get(safe))
        if task is None:
            self.send_control(404, {"ok": False,
                                    "error": f"no video {safe!r}"})
            return
        size = task.media["size"]
        self.send_control(200, {"size": size,
                                "sha256": media_digest(task.id, size)})

    def get_config(self):
        with self.state.lock:
            return dict(self.state.config)

    def post_config(self, raw):
        update = json.loads(raw or b"null")
        with self.state.lock:
            self.state.config = merge_config(self.state.config, update)
            return dict(self.state.config)

    def get_faults(self):
        with self.state.lock:
            return [dict(r) for r in self.state.faults]

    def post_faults(self, raw):
        rules = json.loads(raw or b"null")
        rules = [validate_fault(r) for r in
                 (rules if isinstance(rules, list) else [rules])]
        with self.state.lock:
            self.state.faults.extend(rules)
            return {"ok": True, "pending": len(self.state.faults)}

    def clear_faults(self):
        with self.state.lock:
            self.state.faults.clear()
        return {"ok": True}

    def reset(self):
        with self.state.lock:
            self.state.reset()
        return {"ok": True}

    def get_stats(self):
        with self.state.lock:
            return self.state.stats_snapshot()

    def get_bodies(self):
        wanted = self.query.get("prompt")
        with self.state.lock:
            entries = list(self.state.bodies)
        if wanted is not None:
            entries = [e for e in entries if e["prompt"] == wanted[0]]
        return entries

    def get_tasks(self):
        now = time.time()
        with self.state.lock:
            return [self.state.task_row(t, now)
                    for t in self.state.tasks.values()]


class MockServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024   # many clients connect at once

    def handle_error(self, request, client_address):
        # Clients that hang up (or that we drop) are expected; stay quiet.
        if self.verbose:
            super().handle_error(request, client_address)


def write_port_file(path, port):
    """Write atomically so a reader never sees a partial number."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Mock of the Kling API routes")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the bound port here")
    p.add_argument("--api-key", default="test-key")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if ":" in args.host:
        MockServer.address_family = socket.AF_INET6
    server = MockServer((args.host, args.port), Handler)
    server.state = MockState(args.api_key)
    server.verbose = args.verbose
    port = server.server_address[1]

    def on_signal(signum, frame):
        server.state.shutdown_event.set()       # end stalled responses
        # shutdown() waits for serve_forever, so call it from another thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.port_file:
        write_port_file(args.port_file, port)
    else:
        print(port, flush=True)
    if args.verbose:
        sys.stderr.write(f"mock_api: listening on {args.host}:{port}\n")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        if args.port_file:
            try:
                os.unlink(args.port_file)
            except OSError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
