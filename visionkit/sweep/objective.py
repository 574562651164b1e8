"""The one float that ``train`` returns to Hydra's sweepers, read from ``results.json``'s values.

The objective is the task's monitored metric (``task.monitor``: ``val/acc``, ``val/mIoU``,
``val/map``...) of the best checkpoint's epoch, or another logged metric by key
(``objective=val/f1``). A metric that was never logged is a :class:`ConfigError`; a NaN objective
(a diverged run) is an :class:`ObjectiveError`, which a sweep records as a failed job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig

from visionkit.errors import ConfigError, VisionkitError


class ObjectiveError(VisionkitError, ValueError):
    """The run gave no usable objective (NaN, infinite): the sweeper records the job as failed."""


def objective_key(cfg: DictConfig) -> str:
    """``cfg.objective`` when set, else the task's monitored metric."""
    key = cfg.get("objective") or cfg.task.get("monitor")
    if not key:
        raise ConfigError("no objective: set `objective=val/<metric>` (the task monitors nothing)")
    return str(key)


def objective_direction(cfg: DictConfig) -> str:
    """'maximize' or 'minimize': ``objective_mode`` when set, else the task's ``monitor_mode``
    when the objective is the monitored metric, else 'minimize' for a loss and 'maximize' otherwise."""
    mode = cfg.get("objective_mode")
    if mode is None and objective_key(cfg) == cfg.task.get("monitor"):
        mode = cfg.task.get("monitor_mode")
    if mode is None:
        mode = "min" if "loss" in objective_key(cfg) else "max"
    if str(mode) not in ("min", "max"):
        raise ConfigError(f"objective_mode must be 'min' or 'max', got '{mode}'")
    return "maximize" if str(mode) == "max" else "minimize"


def check_logged(key: str, logged: Mapping[str, Any]) -> None:
    """A ConfigError naming the logged metrics when ``key`` is not one of them."""
    if key not in logged:
        names = ", ".join(sorted(k for k in logged if "/" in k)) or "none"
        raise ConfigError(f"objective '{key}' is not a logged metric; logged: {names}")


def objective_value(cfg: DictConfig, results: Mapping[str, Any], strict: bool = True) -> float:
    """The objective from a run's results (``val/*`` of the best epoch, ``test/*``...).

    ``strict`` (a sweep's job): a missing key or a NaN is an error; otherwise (a single run, e.g.
    ``finetune=evaluate``, which never validates) it is returned as NaN.
    """
    key = objective_key(cfg)
    if not strict and key not in results:
        return math.nan
    check_logged(key, results)
    value = results[key]
    number = math.nan if value is None else float(value)  # results.json stores NaN as null
    if strict and not math.isfinite(number):
        raise ObjectiveError(f"objective '{key}' is {number} (the run diverged?)")
    return number
