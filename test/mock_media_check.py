#!/usr/bin/python3
"""mock_media_check.py - a self-test of test/mock_api.py's media route.

Starts the mock on a free loopback port, checks video_base, the media
tags ([size], [break], [slowmedia], [redirect], [media500]),
url_expiry_seconds, HEAD, 404s, /__mock/media and the media stats, then
stops it.  Prints one line per check; exits 1 if any failed.

Usage: /usr/bin/python3 test/mock_media_check.py [--big BYTES]
  --big  also stream a video of BYTES bytes and print the throughput
         (e.g. --big 300000000)

Standard library only (Python 3.11).
"""

import argparse
import hashlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
KEY = "test-key"
MODEL = "klingai/v2.1-master-text-to-video"
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


class Mock:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mock_media_check.")
        port_file = os.path.join(self.dir, "port")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "mock_api.py"),
             "--host", "127.0.0.1", "--port", "0", "--port-file", port_file,
             "--api-key", KEY])
        deadline = time.monotonic() + 10
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the mock did not start")
            time.sleep(0.05)
        with open(port_file) as f:
            self.port = int(f.read())

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def request(self, method, path, body=None, headers=None, host=None):
        conn = http.client.HTTPConnection(host or "127.0.0.1", self.port,
                                          timeout=60)
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return conn, resp

    def call(self, method, path, body=None, headers=None):
        """(status, parsed JSON or raw bytes, headers)."""
        conn, resp = self.request(method, path, body, headers)
        raw = resp.read()
        conn.close()
        try:
            return resp.status, json.loads(raw), resp.headers
        except ValueError:
            return resp.status, raw, resp.headers

    def create(self, prompt):
        status, body, _ = self.call(
            "POST", "/v2/video/generations", {"model": MODEL, "prompt": prompt},
            {"Authorization": "Bearer " + KEY})
        assert status == 200, (status, body)
        return body.get("id") or body.get("generation_id")

    def poll(self, gid):
        path = "/v2/video/generations?generation_id=" + urllib.parse.quote(gid)
        for _ in range(100):
            status, body, _ = self.call("GET", path, None,
                                        {"Authorization": "Bearer " + KEY})
            if body["status"] in ("completed", "error"):
                return body
            time.sleep(0.05)
        raise AssertionError("task never finished")

    def media_path(self, video):
        url = urllib.parse.urlsplit(video["url"])
        return url.path + ("?" + url.query if url.query else "")

    def download(self, path, headers=None):
        """(status, sha256, bytes read, complete?)"""
        conn, resp = self.request("GET", path, headers=headers)
        sha, n, complete = hashlib.sha256(), 0, True
        try:
            while True:
                chunk = resp.read1(1 << 20)
                if not chunk:
                    break
                sha.update(chunk)
                n += len(chunk)
        except http.client.IncompleteRead:
            complete = False
        length = resp.getheader("Content-Length")
        if length is not None and n != int(length):
            complete = False
        conn.close()
        return resp.status, sha.hexdigest(), n, complete


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--big", type=int, default=0)
    args = p.parse_args()
    mock = Mock()
    try:
        run(mock, args)
    finally:
        mock.stop()
    print("FAILED: %d" % len(failures) if failures else "all ok")
    return 1 if failures else 0


def run(mock, args):
    st, cfg, _ = mock.call("GET", "/__mock/config")
    check(cfg["video_base"] == "https://cdn.mock.invalid"
          and cfg["url_expiry_seconds"] is None, "default config")
    mock.call("POST", "/__mock/config", {"fixed_seconds": 0})
    gid = mock.create("default base")
    video = mock.poll(gid)["video"]
    check(video["url"].startswith("https://cdn.mock.invalid/")
          and "/__media/" not in video["url"]
          and video["file_size"] == 1048576, "default URL and size: " +
          video["url"])

    st, body, _ = mock.call("POST", "/__mock/config", {"video_base": 5})
    check(st == 400, "video_base must be a string")
    mock.call("POST", "/__mock/config", {"video_base": "self"})
    gid = mock.create("self base")
    video = mock.poll(gid)["video"]
    want = f"http://127.0.0.1:{mock.port}/__media/"
    check(video["url"].startswith(want), "self URL: " + video["url"])
    path = mock.media_path(video)
    st, info, _ = mock.call("GET", "/__mock/media/" + path.split("/")[2])
    check(info["size"] == 1048576, "/__mock/media size")
    s1 = mock.download(path)
    s2 = mock.download(path, {"Authorization": "Bearer x"})
    check(s1 == s2 == (200, info["sha256"], 1048576, True),
          "two downloads equal /__mock/media")
    st, _, hdrs = mock.call("HEAD", path)
    check(st == 200 and hdrs["Content-Length"] == "1048576"
          and hdrs["Content-Type"] == "video/mp4", "HEAD")
    st, _, _ = mock.call("HEAD", "/v2/video/generations")
    check(st == 501, "HEAD elsewhere is still 501")
    st, _, _ = mock.call("GET", "/__media/nope/output.mp4")
    check(st == 404, "unknown id 404")
    st, _, _ = mock.call("GET", path.replace("output.mp4", "x.mp4"))
    check(st == 404, "other file name 404")
    st, _, _ = mock.call("GET", "/__mock/media/nope")
    check(st == 404, "/__mock/media unknown 404")

    other = mock.poll(mock.create("self base 2"))["video"]
    st, info2, _ = mock.call(
        "GET", "/__mock/media/" + mock.media_path(other).split("/")[2])
    check(info2["sha256"] != info["sha256"], "tasks differ in bytes")

    gid = mock.create("sized [size:3m]")
    video = mock.poll(gid)["video"]
    check(video["file_size"] == 3 << 20, "[size:3m] file_size")
    check(mock.download(mock.media_path(video))[2] == 3 << 20,
          "[size:3m] bytes")
    gid = mock.create("odd [size:1234567]")
    video = mock.poll(gid)["video"]
    st, info, _ = mock.call(
        "GET", "/__mock/media/" + mock.media_path(video).split("/")[2])
    got = mock.download(mock.media_path(video))
    check(got == (200, info["sha256"], 1234567, True), "[size:1234567]")

    gid = mock.create("broken [break:1000:2] [size:2m]")
    path = mock.media_path(mock.poll(gid)["video"])
    a, b, c = (mock.download(path) for _ in range(3))
    check(a[2] == 1000 and not a[3] and b[2] == 1000 and not b[3]
          and c[2] == 2 << 20 and c[3], "[break:1000:2]")
    st, body, _ = mock.call("GET", "/__mock/media/" + path.split("/")[2])
    check(body["sha256"] == c[1], "whole download after break matches")

    gid = mock.create("flaky [media500:2]")
    path = mock.media_path(mock.poll(gid)["video"])
    got = [mock.call("GET", path)[0] for _ in range(3)]
    check(got == [500, 500, 200], f"[media500:2] {got}")

    gid = mock.create("evil [redirect:file:///etc/passwd]")
    path = mock.media_path(mock.poll(gid)["video"])
    st, _, hdrs = mock.call("GET", path)
    check(st == 302 and hdrs["Location"] == "file:///etc/passwd",
          "[redirect:file:///etc/passwd]")

    gid = mock.create("slow [slowmedia:200000] [size:300000]")
    path = mock.media_path(mock.poll(gid)["video"])
    t0 = time.monotonic()
    got = mock.download(path)
    took = time.monotonic() - t0
    check(got[2] == 300000 and 1.2 < took < 2.5,
          f"[slowmedia:200000] 300000 bytes in {took:.2f} s")

    mock.call("POST", "/__mock/config",
              {"video_base": "http://localhost:%d/" % mock.port,
               "url_expiry_seconds": 600})
    gid = mock.create("expiring [longurl:300]")
    video = mock.poll(gid)["video"]
    url = urllib.parse.urlsplit(video["url"])
    query = urllib.parse.parse_qs(url.query)
    check(url.netloc == "localhost:%d" % mock.port
          and abs(int(query["Expires"][0]) - time.time() - 600) < 5
          and len(query["Signature"][0]) == 40 and len(video["url"]) == 300,
          "custom base, expiry, longurl: " + video["url"][:120])
    check(mock.download(mock.media_path(video))[0] == 200,
          "the media route ignores the query")

    st, stats, _ = mock.call("GET", "/__mock/stats")
    check(stats["media_with_auth"] == 1 and stats["media_broken"] == 2
          and stats["media_requests"] >= 15 and stats["media_bytes_sent"] > 0
          and stats["media_concurrent_max"] >= 1, "stats: " + json.dumps(
              {k: v for k, v in stats.items() if k.startswith("media")}))

    mock.call("POST", "/__mock/reset")
    st, cfg, _ = mock.call("GET", "/__mock/config")
    st, stats, _ = mock.call("GET", "/__mock/stats")
    check(cfg["video_base"] == "https://cdn.mock.invalid"
          and cfg["url_expiry_seconds"] is None
          and stats["media_requests"] == 0, "reset restores defaults")

    if args.big:
        mock.call("POST", "/__mock/config",
                  {"video_base": "self", "fixed_seconds": 0})
        gid = mock.create(f"big [size:{args.big}]")
        path = mock.media_path(mock.poll(gid)["video"])
        t0 = time.monotonic()
        st, info, _ = mock.call("GET", "/__mock/media/" + path.split("/")[2])
        t1 = time.monotonic()
        got = mock.download(path)
        t2 = time.monotonic()
        check(got == (200, info["sha256"], args.big, True),
              f"big: hash {t1 - t0:.2f} s; download+sha256 "
              f"{args.big / (t2 - t1) / 1e6:.0f} MB/s")


if __name__ == "__main__":
    sys.exit(main())
