"""``python -m visionkit report MULTIRUN_DIR``: one table of a sweep's jobs, and its pictures.

Reads each job's ``.hydra/overrides.yaml`` and ``results.json`` (and the sweep's
``multirun.yaml`` for the objective's direction) and writes, in the sweep directory:

- ``report.csv`` and ``report.md``: every job's swept overrides, status, objective and final
  ``val/*`` and ``test/*`` metrics; the best completed job is marked; failed and pruned jobs are
  listed with their error; jobs without results are ``running`` (or interrupted);
- ``report.png``: the objective against each swept parameter (and against the trial number for
  an Optuna sweep).

Works on a sweep that is still running or was interrupted: it reads whatever the jobs have written.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from visionkit.errors import ConfigError

METRIC_PREFIXES = ("val/", "test/")


@dataclass
class Job:
    """One job of a sweep as found on disk."""

    num: int
    path: Path
    params: dict[str, str]
    results: dict[str, Any] = field(default_factory=dict)
    status: str = "running"  # no results.json yet: running, or interrupted
    error: str = ""
    objective: float | None = None


def parse_overrides(lines: Sequence[str]) -> dict[str, str]:
    """``key=value`` overrides as a dict (``+``/``++`` prefixes dropped, ``~key`` kept as deleted)."""
    params = {}
    for line in lines:
        key, _, value = str(line).partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # a quoted string, e.g. model.norm='bn' from the Optuna sweeper
        params[key.lstrip("+")] = value if _ else "(deleted)"
    return params


def read_json(path: Path) -> dict[str, Any] | None:
    """A results.json, or None while it is missing or half-written (a running job)."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Sweep:
    """What ``multirun.yaml`` says about the sweep (defaults when it is missing)."""

    objective: str | None = None
    direction: str = "maximize"
    optuna: bool = False
    searched: list[str] = field(default_factory=list)  # the sweeper's search space keys


def sweep_settings(root: Path) -> Sweep:
    """The objective, its direction, the searched keys and whether Optuna ran the sweep."""
    from omegaconf import OmegaConf

    from visionkit.sweep.objective import objective_direction, objective_key

    path = root / "multirun.yaml"
    found = Sweep(optuna=(root / "optuna.db").exists())
    if not path.exists():
        return found
    cfg = OmegaConf.load(path)
    sweeper = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    found.optuna = found.optuna or "Optuna" in sweeper
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    task_overrides = OmegaConf.select(cfg, "hydra.overrides.task", default=None) or []
    swept = [o for o in task_overrides if any(c in o.partition("=")[2] for c in ",(")]
    found.searched = [*params, *(o.partition("=")[0].lstrip("+") for o in swept)]
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction", default=None)
    try:
        found.objective = objective_key(cfg)
        direction = direction or objective_direction(cfg)
    except ConfigError:
        found.objective = None
    found.direction = str(direction or "maximize")
    return found


def find_jobs(root: Path, objective: str | None) -> list[Job]:
    """Every job directory under ``root`` (one with ``.hydra/overrides.yaml``), by job number."""
    from visionkit.progress import track

    jobs = []
    found = sorted(root.glob("*/.hydra/overrides.yaml"))
    for overrides in track(found, f"reading {len(found)} jobs"):
        path = overrides.parent.parent
        if not path.name.isdigit():
            continue
        job = Job(
            int(path.name), path, parse_overrides(yaml.safe_load(overrides.read_text()) or [])
        )
        results = read_json(path / "results.json")
        if results is not None:
            job.results = results
            key = results.get("objective") or objective
            value = results.get(key) if key else None
            job.status = results.get("status") or ("completed" if key in results else "running")
            job.error = results.get("error", "")
            if job.status == "completed":
                number = math.nan if value is None else float(value)
                if math.isfinite(number):
                    job.objective = number
                else:
                    job.status, job.error = "failed", f"objective {key} is {number}"
        jobs.append(job)
    return sorted(jobs, key=lambda j: j.num)


def swept_keys(jobs: Sequence[Job], searched: Sequence[str] = ()) -> list[str]:
    """The searched keys and any other override whose value is not the same in every job."""
    keys: list[str] = []
    for job in jobs:
        keys += [k for k in job.params if k not in keys]
    return [k for k in keys if k in searched or len({job.params.get(k) for job in jobs}) > 1]


def metric_keys(jobs: Sequence[Job]) -> list[str]:
    """The scalar ``val/*`` and ``test/*`` metrics any job reported."""
    keys = set()
    for job in jobs:
        for key, value in job.results.items():
            if key.startswith(METRIC_PREFIXES) and isinstance(value, int | float | type(None)):
                keys.add(key)
    return sorted(keys)


def best_job(jobs: Sequence[Job], direction: str) -> Job | None:
    done = [j for j in jobs if j.objective is not None]
    if not done:
        return None
    pick = max if direction == "maximize" else min
    return pick(done, key=lambda j: j.objective)


def table(jobs: Sequence[Job], params: list[str], metrics: list[str], best: Job | None, key: str) -> list[list[str]]:  # fmt: skip
    """Header and one row per job."""
    rows = [["job", "status", "best", f"objective ({key})", *params, *metrics]]
    for job in jobs:
        values = [job.results.get(m) for m in metrics]
        rows.append([
            str(job.num), job.status, "*" if job is best else "",
            "" if job.objective is None else f"{job.objective:.6g}",
            *(job.params.get(p, "") for p in params),
            *("" if v is None else f"{v:.6g}" for v in values),
        ])  # fmt: skip
    return rows


def markdown(rows: list[list[str]], jobs: Sequence[Job], root: Path, common: dict[str, str]) -> str:
    """The table in Markdown, with the common overrides and the failed jobs' errors."""
    out = io.StringIO()
    out.write(f"# Sweep {root}\n\n")
    if common:
        out.write("Common overrides: " + " ".join(f"`{k}={v}`" for k, v in common.items()) + "\n\n")
    out.write("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]) + "\n")
    for row in rows[1:]:
        out.write("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |\n")
    failed = [j for j in jobs if j.status in ("failed", "pruned")]
    if failed:
        out.write("\n## Failed and pruned jobs\n\n")
        for job in failed:
            out.write(f"- job {job.num} ({job.status}): {job.error}\n")
    return out.getvalue()


def _numbers(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot(jobs: Sequence[Job], params: list[str], key: str, optuna: bool, path: Path) -> Path | None:
    """The objective against each swept parameter (and the trial number for Optuna)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [j for j in jobs if j.objective is not None]
    axes_names = [*params, *(["trial"] if optuna else [])]
    if not done or not axes_names:
        return None
    fig, axes = plt.subplots(1, len(axes_names), figsize=(4 * len(axes_names), 3.5), squeeze=False)
    y = [j.objective for j in done]
    for ax, name in zip(axes[0], axes_names, strict=True):
        raw = [str(j.num) if name == "trial" else j.params.get(name, "") for j in done]
        xs = _numbers(raw)
        if xs is None:  # categorical: one position per value
            labels = sorted(set(raw))
            ax.scatter([labels.index(v) for v in raw], y)
            ax.set_xticks(range(len(labels)), labels)
        else:
            ax.scatter(xs, y)
            if name != "trial" and min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def report(root: Path) -> dict[str, Any]:
    """Write report.csv, report.md and report.png in ``root``; returns what was found."""
    if not root.is_dir():
        raise ConfigError(f"report: {root} is not a directory")
    sweep = sweep_settings(root)
    jobs = find_jobs(root, sweep.objective)
    if not jobs:
        raise ConfigError(f"report: no job under {root} (expected <n>/.hydra/overrides.yaml)")
    key = sweep.objective
    used = {j.results.get("objective") for j in jobs if j.objective is not None} - {None}
    if len(used) == 1:  # the key the completed jobs were scored by (a resumed sweep may differ)
        key = used.pop()
    key = key or "objective"
    params = swept_keys(jobs, sweep.searched)
    common = {k: v for k, v in jobs[0].params.items() if k not in params}
    metrics = metric_keys(jobs)
    best = best_job(jobs, sweep.direction)
    rows = table(jobs, params, metrics, best, key)
    with open(root / "report.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    text = markdown(rows, jobs, root, common)
    (root / "report.md").write_text(text)
    from visionkit.progress import status

    with status("drawing report.png"):
        figure = plot(jobs, params, key, sweep.optuna, root / "report.png")
    return {"jobs": jobs, "best": best, "markdown": text, "figure": figure}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="visionkit report",
        description="Tabulate a sweep (multirun) directory: report.csv, report.md, report.png.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the multirun directory of a sweep")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (none unless stderr is a terminal)")  # fmt: skip
    args = parser.parse_args(list(argv))
    from visionkit.progress import shown

    with shown(not args.quiet):
        found = report(args.sweep_dir)
    print(found["markdown"], end="")
    for name in ("report.csv", "report.md", *(["report.png"] if found["figure"] else [])):
        print(f"wrote {args.sweep_dir / name}")
    return 0
