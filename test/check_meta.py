#!/usr/bin/env python3
"""test/check_meta.py: META.json against the PGXN Meta Spec 1.0.0, and the
release's version where it is written: kling.control sets it ('X.Y', the
SQL version), META.json and debian/changelog carry it as X.Y.0 (PGXN wants
semantic versions).  Prints what is wrong; exits non-zero if anything is."""
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
                    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$")
TERM = re.compile(r"^[^\s/\\:]{2,}$")
LICENSES = {"agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2",
            "bsd", "freebsd", "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2",
            "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit", "mozilla_1_0",
            "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0",
            "ssleay", "sun", "zlib", "open_source", "restricted",
            "unrestricted", "unknown"}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}


def meta_problems(meta):
    for key in ("name", "abstract", "version", "maintainer", "license",
                "provides", "meta-spec"):
        if key not in meta:
            yield f"missing required key {key!r}"
    if not TERM.match(meta.get("name", "")):
        yield "name must be a term (2+ characters, no space, slash or colon)"
    if not SEMVER.match(meta.get("version", "")):
        yield "version must be a semantic version"
    maint = meta.get("maintainer")
    if not (isinstance(maint, str) and maint) and not (
            isinstance(maint, list) and maint and all(isinstance(m, str) for m in maint)):
        yield "maintainer must be a string or a list of strings"
    lic = meta.get("license")
    if isinstance(lic, str):
        if lic not in LICENSES:
            yield f"license {lic!r} is not one the spec names"
    elif not isinstance(lic, (list, dict)):
        yield "license must be a string, a list or an object"
    provides = meta.get("provides") or {}
    if not isinstance(provides, dict) or not provides:
        yield "provides must name at least one extension"
    for ext, spec in dict(provides).items():
        if not isinstance(spec, dict) or "file" not in spec or "version" not in spec:
            yield f"provides.{ext} needs file and version"
        elif not SEMVER.match(spec["version"]):
            yield f"provides.{ext}.version must be a semantic version"
        elif not (ROOT / spec["file"]).is_file():
            yield f"provides.{ext}.file {spec['file']} does not exist"
    spec = meta.get("meta-spec") or {}
    if spec.get("version") != "1.0.0":
        yield "meta-spec.version must be 1.0.0"
    for phase, rels in (meta.get("prereqs") or {}).items():
        if phase not in PHASES:
            yield f"prereqs phase {phase!r} is not one of {sorted(PHASES)}"
        for rel, reqs in rels.items():
            if rel not in RELATIONS:
                yield f"prereqs.{phase}.{rel} is not a relationship the spec names"
            for name, ver in reqs.items():
                if not (ver == 0 or SEMVER.match(str(ver).lstrip("<>=! "))):
                    yield f"prereqs.{phase}.{rel}.{name}: {ver!r} is not a version"
    if meta.get("release_status", "stable") not in ("stable", "testing", "unstable"):
        yield "release_status must be stable, testing or unstable"
    if not all(isinstance(t, str) and t for t in meta.get("tags", [])):
        yield "tags must be non-empty strings"


def version_problems(meta):
    control = (ROOT / "kling.control").read_text()
    sql_version = re.search(r"^default_version = '([^']+)'", control, re.M).group(1)
    release = sql_version + ".0"
    changelog = (ROOT / "debian/changelog").read_text().splitlines()[0]
    deb_version = re.match(r"^kling \(([^)]+)\)", changelog).group(1)
    for where, version in (("META.json version", meta.get("version")),
                           ("META.json provides.kling.version",
                            meta.get("provides", {}).get("kling", {}).get("version")),
                           ("debian/changelog", deb_version)):
        if version != release:
            yield f"{where} is {version}, kling.control says {sql_version} (release {release})"
    if f"kling--{sql_version}.sql" not in meta.get("provides", {}).get("kling", {}).get("file", ""):
        yield f"META.json provides.kling.file is not sql/kling--{sql_version}.sql"


def main():
    meta = json.loads((ROOT / "META.json").read_text())
    problems = list(meta_problems(meta)) + list(version_problems(meta))
    for p in problems:
        print(f"META/version: {p}")
    print("META.json and versions:", "ok" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
