"""Learning-rate schedules from the ``scheduler`` config, and the one visionkit adds: warm-up + cosine.

A ``scheduler`` config is a partial torch scheduler (``_target_`` + ``_partial_: true``) plus
``interval`` (``epoch``, the default, or ``step``: Lightning steps it every optimizer step). A
scheduler that takes ``total_steps`` and is not given one receives the run's length in that
interval from Lightning, so a schedule fits any data size, epoch count or device count.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

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


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``start_factor * lr`` over the first ``warmup`` fraction of
    ``total_steps``, then cosine decay to ``eta_min``. Each group keeps its own lr (layer-wise
    rates). Every step rescales the group's current lr (chainable, like torch's LinearLR and
    CosineAnnealingLR), so a finetune schedule that rescales a group mid-run stays in effect.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup: float = 0.1,
        start_factor: float = 0.01,
        eta_min: float = 0.0,
        last_epoch: int = -1,
    ) -> None:
        if total_steps < 1:
            raise ConfigError(
                f"scheduler (WarmupCosineLR): total_steps must be >= 1, got {total_steps}"
            )
        if not 0.0 <= warmup < 1.0 or not 0.0 < start_factor <= 1.0:
            raise ConfigError(
                f"scheduler (WarmupCosineLR): warmup in [0, 1) and start_factor in (0, 1] needed, got {warmup}, "
                f"{start_factor}"
            )
        self.total_steps = int(total_steps)
        self.warm = round(warmup * total_steps)
        self.start_factor = float(start_factor)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def _ramp(self, t: int) -> float:
        return self.start_factor + (1.0 - self.start_factor) * t / self.warm

    def _cosine(self, t: int) -> float:
        return 1.0 + math.cos(math.pi * (t - self.warm) / (self.total_steps - self.warm))

    def get_lr(self) -> list[float]:
        t, lrs = self.last_epoch, [group["lr"] for group in self.optimizer.param_groups]
        if t == 0:
            return [lr * self._ramp(0) for lr in lrs] if self.warm else lrs
        if t <= self.warm:
            return [lr * self._ramp(t) / self._ramp(t - 1) for lr in lrs]
        if t > self.total_steps:
            return lrs
        ratio = self._cosine(t) / self._cosine(t - 1)
        return [self.eta_min + (lr - self.eta_min) * ratio for lr in lrs]
