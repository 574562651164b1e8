"""BestMetrics keeps the validation figures of the epoch that Lightning's ModelCheckpoint saved as
best (the oracle: the epoch stored in best.ckpt), across ties, NaN and a resumed run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from visionkit.callbacks.best_metrics import BestMetrics

NAN = math.nan


class Scripted(pl.LightningModule):
    """Logs ``val/score`` from a script per epoch, ``val/other`` = 100 + epoch, and an extra result."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).sum()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        pass

    def on_validation_epoch_end(self) -> None:
        self.log("val/score", float(self.scores[self.current_epoch]))
        self.log("val/other", 100.0 + self.current_epoch)

    def extra_results(self, stage: str) -> dict[str, int]:
        return {f"{stage}/seen_at_epoch": int(self.current_epoch)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(2, 1)), batch_size=1)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.ones(1, 1)), batch_size=1)


def fit(tmp_path: Path, scores: list[float], mode: str, epochs: int, resume: Path | None = None) -> tuple[BestMetrics, ModelCheckpoint]:  # fmt: skip
    best = BestMetrics()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/score", mode=mode, save_last=True)  # fmt: skip
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[best, ckpt],
        default_root_dir=tmp_path,
    )
    trainer.fit(Scripted(scores), ckpt_path=resume)
    return best, ckpt


def saved_epoch(path: str) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


@pytest.mark.parametrize(
    ("scores", "mode"),
    [
        ([0.3, 0.7, 0.7, 0.5], "max"),  # a tie does not replace the best; the last is worse
        ([0.5, 0.2, 0.2, 0.9], "min"),
        ([NAN, 0.1, 0.05], "max"),  # a first NaN counts as the worst score
        ([0.4, NAN, 0.3], "max"),  # a later NaN never is the best
        ([0.1, 0.2, 0.3], "max"),  # the last epoch is the best
    ],
)
def test_snapshot_is_the_validation_of_the_best_checkpoint(tmp_path: Path, scores: list[float], mode: str) -> None:  # fmt: skip
    best, ckpt = fit(tmp_path, scores, mode, epochs=len(scores))
    epoch = saved_epoch(ckpt.best_model_path)
    assert best.best_epoch == epoch
    assert best.best_score == pytest.approx(float(ckpt.best_model_score))
    assert best.extra_results("val") == {
        "val/score": pytest.approx(scores[epoch]),
        "val/other": 100.0 + epoch,
        "val/seen_at_epoch": epoch,
        "best_epoch": epoch,
    }
    assert best.extra_results("test") == {}


def test_a_resumed_run_remembers_the_best_epoch(tmp_path: Path) -> None:
    scores = [0.2, 0.9, 0.1, 0.3, 0.4]
    fit(tmp_path, scores, "max", epochs=3)
    best, ckpt = fit(tmp_path, scores, "max", epochs=5, resume=tmp_path / "ckpt" / "last.ckpt")
    assert saved_epoch(ckpt.best_model_path) == 1 == best.best_epoch
    assert best.extra_results("val")["val/other"] == 101.0


def test_nothing_without_a_monitored_checkpoint(tmp_path: Path) -> None:
    best = BestMetrics()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False, callbacks=[best], default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(Scripted([0.5, 0.1]))
    assert best.monitor is None and best.extra_results("val") == {}
