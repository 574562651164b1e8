"""``learning_curves``: per-epoch losses, the task's metric on training AND validation data, the
learning rates; ``learning_curves.png`` and the bias/variance diagnosis (results.json, printed).

The training metric is not the running loss: after each validation the task measures its own
validation metric (:meth:`~visionkit.tasks.base.BaseTask.metric_pass`, the code validation runs)
on a fixed subset of the training images, in eval mode, through the evaluation transforms (no
augmentation). The subset is evenly spaced over the training set and holds at most
``train_images`` images and no more than the validation pass saw, so it costs at most one more
validation. Logged as ``train_eval/<metric>`` and ``train_eval/loss``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from visionkit.diagnosis import diagnose, format_diagnosis, plot_learning_curves
from visionkit.runner import checkpoint_callback, scalar_metrics

HISTORY_KEYS = ("epoch", "train_loss", "train_eval_loss", "train_metric", "val_loss", "val_metric", "lr")  # fmt: skip


class LearningCurves(pl.Callback):
    """Records the curves while fitting; at the end draws them and diagnoses bias and variance.

    ``monitor``/``mode``: the validation metric (default: the checkpoint's); ``train_images``: size
    of the training subset measured (0 turns the pass off); ``diagnosis``: thresholds of
    :func:`visionkit.diagnosis.diagnose` (``low_train_metric``, ``gap``, ``patience``,
    ``min_delta``).
    """

    def __init__(
        self,
        monitor: str | None = None,
        mode: str | None = None,
        train_images: int = 256,
        num_workers: int = 0,
        diagnosis: Mapping[str, Any] | None = None,
        filename: str = "learning_curves.png",
    ) -> None:
        super().__init__()
        self.monitor = monitor
        self.mode = mode
        self.train_images = max(0, int(train_images))
        self.num_workers = int(num_workers)
        self.thresholds = dict(diagnosis or {})
        self.filename = filename
        self.history: dict[str, list[Any]] = {k: [] for k in HISTORY_KEYS}
        self.diagnosis: dict[str, Any] | None = None
        self.path: Path | None = None
        self._loss_sum: Any = 0.0
        self._loss_steps = 0
        self._val_images = 0
        self._train_eval: dict[str, float] = {}
        self._lrs: dict[str, float] = {}
        self._loader: Any = None
        self._warned = False

    @property
    def metric(self) -> str:
        return (self.monitor or "val/metric").split("/", 1)[-1]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        ckpt = checkpoint_callback(trainer)
        if self.monitor is None:
            self.monitor = getattr(ckpt, "monitor", None)
        if self.mode is None:
            self.mode = getattr(ckpt, "mode", "max")

    def _fitting(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking

    # -- the running training loss (no per-step host sync: summed on the device) -------------
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_steps = 0.0, 0
        self._lrs = {}  # the rates this epoch trains with (epoch schedulers step before validation)
        for optimizer in trainer.optimizers[:1]:
            for i, group in enumerate(optimizer.param_groups):
                self._lrs[str(group.get("name", i))] = float(group["lr"])

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:  # fmt: skip
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None:
            self._loss_sum = self._loss_sum + loss.detach()
            self._loss_steps += 1

    # -- validation: count what it sees, then measure the training subset ----------------------
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:  # fmt: skip
        self._val_images = 0

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:  # fmt: skip
        self._val_images += len(batch[0])

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_eval = {}
        if not self._fitting(trainer):
            return
        count = min(self.train_images, self._val_images)
        measure = getattr(pl_module, "metric_pass", None)
        batches = self._train_batches(trainer, count) if count and callable(measure) else None
        if batches is None:
            return
        self._train_eval = measure(batches)
        # every rank measures the same images (metric states gathered): the mean is the value
        pl_module.log_dict({f"train_eval/{k}": float(v) for k, v in self._train_eval.items()}, sync_dist=True)  # fmt: skip

    def _train_batches(self, trainer: pl.Trainer, count: int) -> Iterable[Any] | None:
        """A loader over ``count`` evenly spaced training images with the evaluation pipeline."""
        if self._loader is not None and len(self._loader.dataset) == count:
            return self._loader
        import numpy as np
        from torch.utils.data import DataLoader, Subset

        dm = getattr(trainer, "datamodule", None)
        dataset = (getattr(dm, "datasets", None) or {}).get("train")
        if dataset is None or not hasattr(dataset, "transform") or not hasattr(dm, "pipeline"):
            if not self._warned:
                warnings.warn(
                    f"learning_curves: {type(dm).__name__} has no re-readable training dataset "
                    "(datasets['train'] with a transform): no training metric",
                    stacklevel=1,
                )
                self._warned = True
            return None
        view = copy.copy(dataset)  # the same files, read through the evaluation transforms
        view.transform = dm.pipeline(train=False)
        count = min(count, len(view))
        indices = np.unique(np.linspace(0, len(view) - 1, count).round().astype(int)).tolist()
        self._loader = DataLoader(
            Subset(view, indices),
            batch_size=int(getattr(dm, "eval_batch_size", 32)),
            shuffle=False,
            num_workers=self.num_workers,
            collate_fn=dm.collate(train=False),
        )
        return self._loader

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._fitting(trainer):
            return
        logged = scalar_metrics(trainer.callback_metrics)
        train_loss = None
        if self._loss_steps:
            train_loss = float(self._loss_sum) / self._loss_steps
        row = {
            "epoch": int(trainer.current_epoch),
            "train_loss": train_loss,
            "train_eval_loss": self._train_eval.get("loss"),
            "train_metric": self._train_eval.get(self.metric),
            "val_loss": logged.get("val/loss"),
            "val_metric": logged.get(self.monitor) if self.monitor else None,
            "lr": dict(self._lrs),
        }
        if self.history["epoch"] and self.history["epoch"][-1] == row["epoch"]:
            for key in HISTORY_KEYS:  # several validations in one epoch: keep the latest
                self.history[key][-1] = row[key]
        else:
            for key in HISTORY_KEYS:
                self.history[key].append(row[key])

    # -- the end of fitting: diagnosis and picture ---------------------------------------------
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.history["epoch"] or trainer.fast_dev_run:
            return
        self.diagnosis = diagnose(
            self.history["train_metric"],
            self.history["val_metric"],
            self.history["epoch"],
            metric=self.metric,
            mode=self.mode or "max",
            **self.thresholds,
        )
        if trainer.is_global_zero:
            path = Path(trainer.default_root_dir) / self.filename
            title = f"{self.metric}: {self.diagnosis['verdict']}"
            self.path = plot_learning_curves(self.history, path, self.metric, title)

    def extra_results(self, stage: str) -> dict[str, Any]:
        """``diagnosis`` (verdict, numbers, reasons, suggestions), the PNG and the curves."""
        if stage != "val" or self.diagnosis is None:
            return {}
        curves = {k: [_clean(v) for v in self.history[k]] for k in HISTORY_KEYS}
        return {
            "diagnosis": self.diagnosis,
            "learning_curves": {"png": str(self.path) if self.path else None, **curves},
        }

    def final_report(self) -> str | None:
        """The diagnosis as text, printed at the end of `train`."""
        return format_diagnosis(self.diagnosis) if self.diagnosis else None

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = state_dict.get("history") or {}
        self.history = {k: list(history.get(k, [])) for k in HISTORY_KEYS}


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
