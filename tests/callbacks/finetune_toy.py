"""Tiny, deterministic pieces for finetune-schedule tests: data, task factory, rank checks."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

NUM_CLASSES = 3
CHANNELS = (4, 8, 8)


def toy_data(n: int = 24, size: int = 16, seed: int = 0) -> TensorDataset:
    """Images whose class is the channel with the largest mean: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.randn(n, 3, size, size, generator=g) * 0.5
    images[torch.arange(n), labels] += 1.0
    return TensorDataset(images, labels)


class ToyData(pl.LightningDataModule):
    """Train/val loaders over ``toy_data`` (no shuffling: runs are exactly repeatable)."""

    def __init__(self, n: int = 24, batch_size: int = 4, seed: int = 0, shift: float = 0.0) -> None:
        super().__init__()
        self.data = toy_data(n, seed=seed)
        if shift:
            self.data.tensors[0].mul_(1 + shift).add_(shift)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.data, batch_size=self.batch_size, shuffle=False)


def make_task(head: Any = "linear", lr: float = 0.1, scheduler: dict | None = None, **kw: Any):
    """A ClassificationTask on a 3-stage simple_cnn backbone."""
    from visionkit.plugins import load_builtins
    from visionkit.registries import TASKS

    load_builtins()
    model = {"backbone": {"name": "simple_cnn", "channels": list(CHANNELS)}, "head": head, **kw}
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": lr, "momentum": 0.9}
    return TASKS.get("classification")(
        model=model, num_classes=NUM_CLASSES, optimizer=optimizer, scheduler=scheduler
    )


def trainer(callbacks: list, max_epochs: int, **kw: Any) -> pl.Trainer:
    """A quiet CPU trainer."""
    defaults = dict(
        accelerator="cpu", devices=1, max_epochs=max_epochs, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, deterministic=True,
    )  # fmt: skip
    return pl.Trainer(**{**defaults, **kw}, callbacks=callbacks)
