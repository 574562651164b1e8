"""The validation figures of the best checkpoint, for results.json.

``trainer.callback_metrics`` after ``fit`` holds the last epoch's ``val/*``, while ``test/*`` is
computed from the best checkpoint: reported side by side they describe different weights.
:class:`BestMetrics` snapshots every ``val/*`` value (and the task's ``extra_results("val")``,
e.g. per-class IoU) each time the monitored metric improves, with the rule of the trainer's
``ModelCheckpoint`` (its ``monitor`` and ``mode``, ``save_top_k=1``: the first value is kept, later
ones replace it only when strictly better, NaN never is), so the snapshot belongs to the epoch
whose weights are ``best.ckpt``. The snapshot is part of the callback's ``state_dict``: a resumed
run remembers it.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from visionkit.runner import checkpoint_callback, scalar_metrics


class BestMetrics(pl.Callback):
    """Keeps the ``val/*`` figures of the best epoch; ``extra_results("val")`` gives them."""

    def __init__(self) -> None:
        self.monitor: str | None = None
        self.mode = "max"
        self.best_score: float | None = None
        self.best_epoch: int | None = None
        self.snapshot: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        ckpt = checkpoint_callback(trainer)
        self.monitor = getattr(ckpt, "monitor", None)
        self.mode = getattr(ckpt, "mode", "max")

    def improves(self, value: float) -> bool:
        """Whether ``value`` would replace the best checkpoint (ModelCheckpoint, save_top_k=1)."""
        if self.best_score is None:
            return True
        return value > self.best_score if self.mode == "max" else value < self.best_score

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.state.fn != TrainerFn.FITTING:  # ModelCheckpoint saves only while fitting
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return  # ModelCheckpoint reports the missing key
        value = float(value)
        improved = self.improves(value)
        if self.best_score is not None:  # as ModelCheckpoint: every rank must agree to replace
            improved = trainer.strategy.reduce_boolean_decision(improved)
        if not improved:
            return
        # ModelCheckpoint stores a NaN first score as the worst possible one
        worst = -math.inf if self.mode == "max" else math.inf
        self.best_score = worst if math.isnan(value) else value
        self.best_epoch = int(trainer.current_epoch)
        self.snapshot = last_val_results(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ckpt = checkpoint_callback(trainer)
        score = getattr(ckpt, "best_model_score", None)
        if score is None or self.best_score is None or not ckpt.best_model_path:
            return
        if not math.isclose(float(score), self.best_score, rel_tol=1e-6, abs_tol=1e-9):
            warnings.warn(
                f"the best {self.monitor} seen by BestMetrics ({self.best_score}) differs from "
                f"the checkpoint's ({float(score)}): results.json's val/* may not belong to "
                f"{ckpt.best_model_path}",
                stacklevel=1,
            )

    def extra_results(self, stage: str) -> dict[str, Any]:
        """``val/*`` of the best epoch and ``best_epoch`` (nothing before the first validation)."""
        if stage != "val" or not self.snapshot:
            return {}
        return {**self.snapshot, "best_epoch": self.best_epoch}

    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "snapshot": self.snapshot,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("monitor") != self.monitor and self.monitor is not None:
            return  # another metric is monitored now: its best is not known
        self.best_score = state_dict.get("best_score")
        self.best_epoch = state_dict.get("best_epoch")
        self.snapshot = dict(state_dict.get("snapshot") or {})


def last_val_results(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The latest validation's ``val/*`` scalars and the task's ``extra_results("val")``."""
    values = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items() if k.startswith("val/")}  # fmt: skip
    extra = getattr(pl_module, "extra_results", None)
    if callable(extra):
        values.update(extra("val"))
    return values
