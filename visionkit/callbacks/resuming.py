"""What makes a resumed run continue the uninterrupted run's timeline exactly, losing nothing.

``EpochSeed`` reseeds, at the start of every training epoch, the global RNGs (augmentation in the
main process, dropout, MixUp) and the train loader's generator (worker seeds) from ``(seed,
epoch)``; with ``EpochRandomSampler``'s order this makes epoch ``e`` the same whether the run got
there without a break or resumed from a checkpoint. ``PurgeAbandonedRows`` drops the logged rows
of the timeline a resume abandons. ``runner.build_trainer`` gives both to every trainer, with
``AtomicCheckpointIO`` (checkpoints written atomically). ``ModelCheckpoint`` (conf/callbacks)
remembers the best checkpoint when a run is resumed into another directory.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

from visionkit.data.shuffling import GLOBAL, LOADER, epoch_seed
from visionkit.files import atomic_open


class EpochSeed(pl.Callback):
    """Reseed ``random``, NumPy, torch and the train loaders' generators from ``(seed, epoch)``."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch, rank = trainer.current_epoch, trainer.global_rank
        value = epoch_seed(self.seed, epoch, GLOBAL, rank)
        random.seed(value)
        np.random.seed(value % 2**32)
        torch.manual_seed(value)
        for loader in _loaders(trainer.train_dataloader):
            generator = getattr(loader, "generator", None)
            if isinstance(generator, torch.Generator):
                generator.manual_seed(epoch_seed(self.seed, epoch, LOADER, rank))


class PurgeAbandonedRows(pl.Callback):
    """On resume, loggers with ``purge_from`` drop rows with ``step >=`` the checkpoint's step."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.ckpt_path or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            purge = getattr(logger, "purge_from", None)
            if callable(purge):
                purge(trainer.global_step)


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint that remembers the best checkpoint across a change of directory.

    Lightning restores the best score and the top-k checkpoints only when the checkpoint directory
    is unchanged; a run resumed into another directory (``hydra.run.dir=...``) would otherwise call
    its first epoch after the resume the best. Checkpoints of the old directory are kept as they
    are: Lightning never deletes files outside its own ``dirpath``. Same class name, same state key.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict({**state_dict, "dirpath": self.dirpath})


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints saved to a temporary file in the same directory, then renamed over the target.

    Lightning's own save goes through an fsspec transaction that, on a local disk, writes to the
    system temp directory and moves the file over: a copy, not a rename, when /tmp is another
    filesystem, so a crash mid-copy leaves a truncated ``last.ckpt``. Remote paths keep Lightning's.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_open(path, "wb") as file:
            torch.save(checkpoint, file)


def _loaders(obj: Any) -> Iterator[Any]:
    """The DataLoaders in ``trainer.train_dataloader`` (one, or a list/dict of them)."""
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, list | tuple):
        for item in obj:
            yield from _loaders(item)
    elif obj is not None:
        yield obj
