"""Learning-rate schedules from the ``scheduler`` config, and the one visionkit adds: warm-up + cosine.

A ``scheduler`` config is a partial torch scheduler (``_target_`` + ``_partial_: true``) plus
``interval`` (``epoch``, the default, or ``step``: Lightning steps it every optimizer step). A
scheduler that takes ``total_steps`` and is not given one receives the run's length in that
interval from Lightning, so a schedule fits any data size, epoch count or device count.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

from visionkit.errors import ConfigError

INTERVALS = ("epoch", "step")


def build_scheduler(
    cfg: Mapping[str, Any], optimizer: torch.optim.Optimizer, run_length: Callable[[str], int]
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` dict for ``cfg``; ``run_length(interval)`` is the number of
    epochs or optimizer steps of the run, asked only when the scheduler takes ``total_steps``."""
    from hydra.utils import instantiate

    cfg = dict(cfg)
    interval = cfg.pop("interval", "epoch")
    if interval not in INTERVALS:
        raise ConfigError(f"scheduler.interval must be one of {INTERVALS}, got {interval!r}")
    factory = instantiate(cfg)
    kwargs = {}
    if "total_steps" not in cfg and "total_steps" in _parameters(factory):
        kwargs["total_steps"] = int(run_length(interval))
    return {"scheduler": factory(optimizer, **kwargs), "interval": interval}


def _parameters(fn: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        return {}


def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup: float = 0.1,
    start_factor: float = 0.01,
    eta_min: float = 0.0,
) -> LRScheduler:
    """Linear warm-up from ``start_factor * lr`` over the first ``warmup`` fraction of
    ``total_steps``, then cosine decay to ``eta_min``. Each group keeps its own lr (layer-wise
    rates), and both phases are multiplicative, so finetune schedules that rescale groups compose.
    """
    if total_steps < 1:
        raise ConfigError(f"warmup_cosine: total_steps must be >= 1, got {total_steps}")
    if not 0.0 <= warmup < 1.0 or not 0.0 < start_factor <= 1.0:
        raise ConfigError(
            f"warmup_cosine: warmup in [0, 1) and start_factor in (0, 1] needed, got {warmup}, "
            f"{start_factor}"
        )
    warm = round(warmup * total_steps)
    decay = CosineAnnealingLR(optimizer, T_max=max(total_steps - warm, 1), eta_min=eta_min)
    if warm == 0:
        return decay
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warm)
    return SequentialLR(optimizer, [ramp, decay], milestones=[warm])
