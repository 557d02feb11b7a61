#!/usr/bin/python3
"""benchlib.py: the arithmetic of test/bench (standard library only).

  benchlib.py median                      numbers on stdin -> their median
  benchlib.py wake CLIENT ARRIVALS WARMUP  wake latency from the client's
                                          commit times and the mock's arrival
                                          log: "median p95 n missing min max
                                          median_from_send p95_from_send" in
                                          milliseconds
  benchlib.py polling TASKS_JSON ROWS_A ROWS_B SCALE EXAMPLE_S
                                          polling cost: the Python mock's
                                          tasks joined with the kling_tasks
                                          rows of batch A (no history: fixed
                                          polling, the provider's example)
                                          and batch B (with history); prints
                                          a report, then a last line "RESULT
                                          ratio p95_B p95_A ratio_vs_ideal
                                          not_done" (ratio: polls per video
                                          of B over A)
  benchlib.py lag CLIENT ARRIVALS         delay from a client's commit to
                                          the creates it caused arriving at
                                          the mock: CLIENT has "KEY EXPECTED
                                          STAMP" lines, the creates' tokens
                                          are KEY or KEY-<anything>; prints
                                          per KEY "KEY n missing min p50 p99
                                          max", then "ALL n missing min p50
                                          p99 max", in milliseconds ("nan"
                                          if none)
  benchlib.py plans SRC_DIR NAME...       the worker's SQL as the *.c files of
                                          SRC_DIR have it: one "NAME<TAB>types
                                          <TAB>sql" line per plan found (types
                                          "-": none); a note on stderr for
                                          each plan not found
"""

import glob
import json
import os
import math
import re
import statistics
import sys


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(1, math.ceil(p / 100.0 * len(s)))
    return s[k - 1]


def cmd_median(_args):
    nums = [float(x) for x in sys.stdin.read().split()]
    print(f"{statistics.median(nums):.6g}" if nums else "nan")


def cmd_wake(args):
    client_path, arrivals_path, warmup = args[0], args[1], int(args[2])
    commits = {}
    sent = {}
    order = []
    with open(client_path) as f:
        for line in f:
            tok, t, t_sent = line.split()
            commits[tok] = float(t)
            sent[tok] = float(t_sent)
            order.append(tok)
    arrivals = {}
    with open(arrivals_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2 and parts[1] in commits and parts[1] not in arrivals:
                arrivals[parts[1]] = float(parts[0])
    lat = []
    upper = []
    missing = 0
    for tok in order[warmup:]:
        if tok in arrivals:
            lat.append((arrivals[tok] - commits[tok]) * 1000.0)
            upper.append((arrivals[tok] - sent[tok]) * 1000.0)
        else:
            missing += 1
    if not lat:
        print("nan nan 0 %d nan nan nan nan" % missing)
        return
    print("%.3f %.3f %d %d %.3f %.3f %.3f %.3f" % (
        statistics.median(lat), percentile(lat, 95), len(lat), missing, min(lat), max(lat),
        statistics.median(upper), percentile(upper, 95)))


def cmd_lag(args):
    client_path, arrivals_path = args[0], args[1]
    stamps = {}
    order = []
    with open(client_path) as f:
        for line in f:
            key, expected, t = line.split()
            stamps[key] = (int(expected), float(t))
            order.append(key)
    arrivals = {}          # key -> [arrival of each create, first per token]
    seen = set()
    with open(arrivals_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2 or parts[1] in seen:
                continue
            key = parts[1].split("-", 1)[0]
            if key in stamps:
                seen.add(parts[1])
                arrivals.setdefault(key, []).append(float(parts[0]))

    def summary(lat):
        if not lat:
            return "nan nan nan nan"
        return "%.3f %.3f %.3f %.3f" % (min(lat), statistics.median(lat), percentile(lat, 99),
                                        max(lat))
    everything = []
    missing_all = 0
    for key in order:
        expected, t = stamps[key]
        lat = [(a - t) * 1000.0 for a in arrivals.get(key, [])]
        missing = max(0, expected - len(lat))
        everything += lat
        missing_all += missing
        print("%s %d %d %s" % (key, len(lat), missing, summary(lat)))
    print("ALL %d %d %s" % (len(everything), missing_all, summary(everything)))


def polling_rows(tasks, rows_path, scale, example):
    """Per completed task of one batch, by video duration: (generation
    time, polls, added latency, ideal example polls, ideal example added),
    all in provider seconds; and how many tasks did not complete."""
    groups = {}
    not_done = 0
    for line in open(rows_path):
        gid, status, duration, completed_at = line.rstrip("\n").split("\t")
        t = tasks.get(gid)
        if status != "completed" or t is None or completed_at in ("", "\\N"):
            not_done += 1
            continue
        gen = (t["finish"] - t["created"]) * scale
        added = (float(completed_at) - t["finish"]) * scale
        ex_polls = math.ceil(gen / example)
        groups.setdefault(duration, []).append(
            (gen, t["polls"], added, ex_polls, ex_polls * example - gen))
    return groups, not_done


def cmd_polling(args):
    tasks_path, rows_a, rows_b = args[0], args[1], args[2]
    scale, example = float(args[3]), float(args[4])
    with open(tasks_path) as f:
        tasks = {t["id"]: t for t in json.load(f)}
    ga, na = polling_rows(tasks, rows_a, scale, example)
    gb, nb = polling_rows(tasks, rows_b, scale, example)
    print("  %-6s | %-34s | %-34s | %s" % (
        "video", "fixed 10 s polling (no history)", "kling, with history",
        "fixed 10 s, ideal"))
    print("  %-6s | %-34s | %-34s | %s" % (
        "", "tasks gen time polls added p50/p95", "tasks gen time polls added p50/p95",
        "polls added p95"))

    def cell(g):
        if not g:
            return "%-34s" % "-"
        return "%5d %6.0f s %5.1f %5.1f / %5.1f s" % (
            len(g), statistics.mean(r[0] for r in g), statistics.mean(r[1] for r in g),
            statistics.median(r[2] for r in g), percentile([r[2] for r in g], 95))
    for d in sorted(set(ga) | set(gb), key=int):
        a, b = ga.get(d, []), gb.get(d, [])
        ideal = a + b
        print("  %-6s | %s | %s | %5.1f %5.1f s" % (
            d + " s", cell(a), cell(b), statistics.mean(r[3] for r in ideal),
            percentile([r[4] for r in ideal], 95)))
    all_a = [r for g in ga.values() for r in g]
    all_b = [r for g in gb.values() for r in g]
    if not all_a or not all_b:
        print("RESULT nan nan nan nan %d" % (na + nb))
        return
    # Polls per video, averaged per duration and then over durations, so
    # that both batches weigh the two lengths alike.
    def per_video(groups, col):
        return statistics.mean(statistics.mean(r[col] for r in g) for g in groups.values())
    ratio = per_video(gb, 1) / per_video(ga, 1)
    ratio_ideal = per_video(gb, 1) / per_video(gb, 3)
    print("RESULT %.3f %.2f %.2f %.3f %d" % (
        ratio, percentile([r[2] for r in all_b], 95), percentile([r[2] for r in all_a], 95),
        ratio_ideal, na + nb))


OID_TYPES = {"INT4OID": "int4", "INT8OID": "int8", "TEXTOID": "text",
             "BOOLOID": "bool", "JSONBOID": "jsonb", "OIDOID": "oid",
             "TIMESTAMPTZOID": "timestamptz", "FLOAT8OID": "float8",
             "INT2OID": "int2", "NAMEOID": "name", "INT8ARRAYOID": "int8[]"}


def cmd_plans(args):
    # The plans may live in any file of the directory; a plan that is gone
    # is noted and skipped, not an error.
    sources = [open(p).read() for p in sorted(glob.glob(os.path.join(args[0], "*.c")))]
    for name in args[1:]:
        pattern = r"\[KLING_PLAN_" + re.escape(name) + r"\]\s*=\s*\{(.*?)\n\s*\},"
        m = next((m for m in (re.search(pattern, src, re.S) for src in sources) if m), None)
        if m is None:
            print("  (plan %s: not found in %s/*.c, skipped)"
                  % (name, os.path.basename(args[0].rstrip("/"))),
                  file=sys.stderr)
            continue
        body = m.group(1)
        strings = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
        tail = re.search(r",\s*(\d+)\s*,\s*\{([^}]*)\}\s*$", body)
        if not strings or tail is None:
            print("  (plan %s: its definition could not be read, skipped)" % name, file=sys.stderr)
            continue
        sql = "".join(strings).replace('\\"', '"').replace("\\\\", "\\")
        sql = sql.replace("%1$s", "kling_tasks").replace("%%", "%")
        nargs = int(tail.group(1))
        types = [OID_TYPES.get(t.strip(), "unknown") for t in tail.group(2).split(",")][:nargs]
        if "unknown" in types:
            print("  (plan %s: an argument type the bench does not know, skipped)" % name,
                  file=sys.stderr)
            continue
        print("%s\t%s\t%s" % (name, ",".join(types) or "-", " ".join(sql.split())))


if __name__ == "__main__":
    {"median": cmd_median, "wake": cmd_wake, "lag": cmd_lag, "polling": cmd_polling,
     "plans": cmd_plans}[sys.argv[1]](sys.argv[2:])
