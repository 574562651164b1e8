"""EMA of the weights (``callbacks=ema``): validation, test, the saved checkpoints and so ``predict``
and ``export`` use the averaged weights; training continues on the raw ones.

Built on Lightning's :class:`~pytorch_lightning.callbacks.WeightAveraging` (its swap of the
averaged weights in for validation, its checkpoint layout: ``state_dict`` holds the average,
``current_model_state`` the raw weights, so a checkpoint read by ``test``/``predict``/``export``
or ``visionkit.load`` gives the average with nothing else to know). What it adds, and why not
Lightning's ``EMAWeightAveraging`` as it is:

* a **warm-up of the decay**: update ``k`` (``k`` earlier updates) uses
  ``decay_k = decay * (1 - exp(-k / warmup_tau))`` (``warmup_tau=0``: ``decay``), so early
  averages are not dominated by the random initial weights; Lightning's decay is constant;
* **test with the averaged weights**: Lightning's ``on_load_checkpoint`` reloads the *raw* weights
  (``current_model_state``) into the model whenever its average exists, i.e. also in
  ``trainer.test(ckpt_path=best)`` after ``fit``, which would test the raw weights. Outside fitting
  this callback leaves the loaded ``state_dict`` (the average) in place;
* **parts built by other callbacks' setup** (``finetune=multi_stage_probe`` replaces the head):
  the average is made at ``on_fit_start`` (or when a resumed checkpoint is loaded), after every
  callback's ``setup``, not in this callback's ``setup``, so it always mirrors the final model;
* **DDP**: parameters are equal on every rank (DDP all-reduces gradients), BatchNorm buffers are
  not (each rank sees its own shard): the average is broadcast from rank 0 before each validation
  and at the end of training, so every rank validates and ends with the same average.

Freeze schedules: frozen parameters are averaged too (a constant stays constant), so unfreezing
mid-run needs nothing special. Integer buffers (BatchNorm's ``num_batches_tracked``) are copied.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from pytorch_lightning.trainer.states import TrainerFn
from torch.optim.swa_utils import AveragedModel

from visionkit.distributed import broadcast_tensors
from visionkit.errors import ConfigError
from visionkit.lightning_compat import (
    average_of,
    averaging_device,
    build_average,
    last_update_step,
    set_last_update_step,
)


class _EmaStep:
    """``avg_fn`` of ``AveragedModel``: ``avg <- d * avg + (1 - d) * current`` with the callback's
    current decay ``d`` (set once per update, not read from a device tensor per parameter)."""

    def __init__(self) -> None:
        self.decay = 0.0

    def __call__(self, avg: torch.Tensor, current: torch.Tensor, num_averaged: Any) -> torch.Tensor:
        if not avg.is_floating_point():
            return current
        return avg.lerp(current, 1.0 - self.decay)


class EMA(WeightAveraging):
    """Exponential moving average of the weights (and buffers), updated every ``every_n_steps``
    optimizer steps from ``start_step`` on; see the module docstring."""

    def __init__(
        self,
        decay: float = 0.999,
        warmup_tau: float = 0.0,
        every_n_steps: int = 1,
        start_step: int = 0,
        use_buffers: bool = True,
        device: str | None = None,
    ) -> None:
        if not 0.0 <= decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay}: must be in [0, 1)")
        if warmup_tau < 0:
            raise ConfigError(f"callbacks.ema.warmup_tau={warmup_tau}: must be >= 0")
        if every_n_steps < 1:
            raise ConfigError(f"callbacks.ema.every_n_steps={every_n_steps}: must be >= 1")
        if start_step < 0:
            raise ConfigError(f"callbacks.ema.start_step={start_step}: must be >= 0")
        self._step_fn = _EmaStep()
        super().__init__(device=device, use_buffers=use_buffers, avg_fn=self._step_fn)
        self.decay, self.warmup_tau = float(decay), float(warmup_tau)
        self.every_n_steps, self.start_step = int(every_n_steps), int(start_step)
        self.num_updates = 0  # updates so far (the first one copies the weights)

    def decay_at(self, k: int) -> float:
        """The decay of update ``k`` (``k`` earlier updates), with the warm-up."""
        if self.warmup_tau <= 0:
            return self.decay
        return self.decay * (1.0 - math.exp(-k / self.warmup_tau))

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        if step_idx is None or step_idx < self.start_step:
            return False
        return (step_idx - self.start_step) % self.every_n_steps == 0

    # -- the average exists once every callback's setup has shaped the model ---------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pass  # see _ensure_average

    def _ensure_average(self, pl_module: pl.LightningModule) -> AveragedModel:
        average = average_of(self)
        if average is None:
            return build_average(self, pl_module)
        if averaging_device(self) is None and average.n_averaged.device != pl_module.device:
            average.to(pl_module.device)  # made before the strategy moved the model
        return average

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ensure_average(pl_module)
        self._sync(trainer)  # DDP: rank 0's initial copy everywhere

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:  # fmt: skip
        # global_step counts optimizer steps: with gradient accumulation, once per N batches
        step_idx = trainer.global_step - 1
        if trainer.global_step > last_update_step(self) and self.should_update(step_idx=step_idx):
            self._step_fn.decay = self.decay_at(self.num_updates)
            self._ensure_average(pl_module).update_parameters(pl_module)
            self.num_updates += 1
            set_last_update_step(self, trainer.global_step)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if average_of(self) is not None:
            self._sync(trainer)
        super().on_validation_epoch_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sync(trainer)
        super().on_train_end(trainer, pl_module)

    def _sync(self, trainer: pl.Trainer) -> None:
        """Under DDP, every rank takes rank 0's average (BatchNorm buffers differ per rank)."""
        module = average_of(self)
        if trainer.world_size < 2 or module is None:
            return
        broadcast_tensors(itertools.chain(module.parameters(), module.buffers()), src=0)

    # -- checkpoints ------------------------------------------------------------------------------
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING:
            return  # test/validate/predict: the loaded state_dict is the average; keep it
        self._ensure_average(pl_module)
        super().on_load_checkpoint(trainer, pl_module, checkpoint)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.num_updates = int(state_dict.get("num_updates", 0))

    def extra_results(self, stage: str) -> dict[str, Any]:
        """The averaging's settings and how many updates it made (results.json ``ema``)."""
        if stage != "val":
            return {}
        return {
            "ema": {
                "decay": self.decay,
                "warmup_tau": self.warmup_tau,
                "every_n_steps": self.every_n_steps,
                "start_step": self.start_step,
                "updates": self.num_updates,
            }
        }
