"""Run every benchmark in bench/ one after another (``make bench``); each writes bench/results/.

Scripts run with their defaults, except those that need arguments (listed in ``ARGUMENTS``, one
run per argument list). A failing script is reported and the others still run; the exit status is
1 when any failed. ``--only NAME ...`` runs a subset (names without ``bench_`` and ``.py``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ARGUMENTS: dict[str, list[list[str]]] = {
    "tasks": [
        ["--task", task]
        for task in (
            "classification",
            "detection",
            "semantic_segmentation",
            "instance_segmentation",
        )
    ],
}


def scripts() -> dict[str, Path]:
    """Every ``bench_<name>.py`` in this folder, by name."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH.glob("bench_*.py"))}


def main() -> int:
    found = scripts()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="+", choices=sorted(found), default=sorted(found))
    names = parser.parse_args().only
    failed = []
    for name in names:
        for args in ARGUMENTS.get(name, [[]]):
            command = [sys.executable, str(found[name]), *args]
            print(f"== {' '.join(command[1:])}", flush=True)
            start = time.perf_counter()
            code = subprocess.run(command, cwd=BENCH.parent).returncode
            print(f"== exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
            if code != 0:
                failed.append(" ".join(command[1:]))
    for command in failed:
        print(f"failed: {command}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
