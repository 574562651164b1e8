"""``overlays``: save a few prediction pictures per validation epoch (and to TensorBoard).

The task draws them (``task.overlays(batch, n, mean, std) -> list of uint8 [3,H,W]``; tasks without
that method are skipped); this callback picks the first validation batch on rank zero and writes
``<run dir>/overlays/epoch<E>_<i>.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from visionkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionkit.overlays import save_png


class ValidationOverlays(pl.Callback):
    """``num_images`` overlays from the first validation batch, every ``every_n_epochs`` epochs."""

    def __init__(self, num_images: int = 4, every_n_epochs: int = 1, dirname: str = "overlays") -> None:  # fmt: skip
        super().__init__()
        self.num_images = int(num_images)
        self.every_n_epochs = max(1, int(every_n_epochs))
        self.dirname = dirname
        self.saved: list[str] = []

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking:
            return
        if trainer.current_epoch % self.every_n_epochs or not trainer.is_global_zero:
            return
        draw = getattr(pl_module, "overlays", None)
        if not callable(draw) or self.num_images < 1:
            return
        dm = getattr(trainer, "datamodule", None)
        mean = getattr(dm, "mean", IMAGENET_MEAN)
        std = getattr(dm, "std", IMAGENET_STD)
        pictures = draw(batch, self.num_images, mean, std)
        out = Path(trainer.default_root_dir) / self.dirname
        epoch = trainer.current_epoch
        for i, picture in enumerate(pictures):
            self.saved.append(save_png(picture, out / f"epoch{epoch:03d}_{i}.png"))
        self._to_tensorboard(trainer, pictures, epoch)

    @staticmethod
    def _to_tensorboard(trainer: pl.Trainer, pictures: list[torch.Tensor], epoch: int) -> None:
        from pytorch_lightning.loggers import TensorBoardLogger

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for i, picture in enumerate(pictures):
                    logger.experiment.add_image(f"val/overlay_{i}", picture, global_step=epoch)
