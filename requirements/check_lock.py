"""Fail when a lock file no longer matches pyproject.toml (`make install` runs it).

    python requirements/check_lock.py requirements/run.txt             # [project] dependencies
    python requirements/check_lock.py requirements/dev.txt --extra dev  # and the dev extras

Every requirement must be pinned in the lock with a version its specifier allows; otherwise
someone changed pyproject.toml without `make lock`, and the install (which takes the lock as
it is, with --no-deps) would miss or mismatch it.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def pins(lock: Path) -> dict[str, Version]:
    found: dict[str, Version] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[canonicalize_name(match.group(1))] = Version(match.group(2))
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("lock", type=Path)
    parser.add_argument("--extra", action="append", default=[])
    parser.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"))
    args = parser.parse_args()

    project = tomllib.loads(args.pyproject.read_text())["project"]
    wanted = list(project.get("dependencies", []))
    for extra in args.extra:
        wanted += project.get("optional-dependencies", {}).get(extra, [])

    locked = pins(args.lock)
    problems = []
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        version = locked.get(canonicalize_name(req.name))
        if version is None:
            problems.append(f"{text}: not in {args.lock}")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: {args.lock} pins {version}")
    if problems:
        print(f"{args.lock} does not match pyproject.toml; run `make lock`:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
