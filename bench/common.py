"""Helpers shared by the benchmark scripts: timing, composing configs, writing result tables."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def median_time(fn: Callable[[], object], repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def command_time(
    args: Sequence[str], repeats: int = 3, cwd: str | None = None, code: int = 0
) -> float:
    """Median wall time of a subprocess (fails loudly if it exits with another code than
    ``code``: 2 for a CLI run that is meant to stop on a user error)."""

    def once() -> None:
        proc = subprocess.run(args, capture_output=True, cwd=cwd)
        if proc.returncode != code:
            raise RuntimeError(
                f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]!r}"
            )

    return median_time(once, repeats)


def compose(overrides: Sequence[str] = (), config_name: str = "train"):
    """The visionkit config as the CLI composes it (with HydraConfig set, so ${hydra:...} works)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from visionkit.plugins import conf_dir, register_config_search_path

    register_config_search_path()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
    return cfg


def write_table(
    name: str, title: str, header: Sequence[str], rows: Sequence[Sequence[object]], notes: str = ""
) -> str:
    """Print a markdown table and save it as bench/results/<name>.md."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    if notes:
        lines += ["", notes]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return text


def _fmt(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def python() -> str:
    return sys.executable
