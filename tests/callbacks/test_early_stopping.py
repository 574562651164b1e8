"""Early stopping stops where patience and min delta say, reports why, and a resume keeps counting."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from tests.callbacks.test_best_metrics import Scripted
from visionkit.registries import CALLBACKS

# improvement must exceed min_delta=0.5: epochs 2 and 3 do not improve on epoch 1's 2.0
SCORES = [1.0, 2.0, 2.3, 2.4, 5.0, 6.0, 7.0, 8.0]


def fit(tmp_path: Path, epochs: int, resume: Path | None = None):
    stop = CALLBACKS.build(
        {
            "name": "early_stopping",
            "monitor": "val/score",
            "mode": "max",
            "patience": 2,
            "min_delta": 0.5,
        }
    )
    last = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last", monitor=None)
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[stop, last], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(Scripted(SCORES), ckpt_path=resume)
    return stop, trainer


def test_stops_after_patience_and_reports_the_reason(tmp_path: Path) -> None:
    stop, trainer = fit(tmp_path, epochs=8)
    assert trainer.current_epoch == 4  # epoch 3 (index) was the last one run
    report = stop.extra_results("val")["early_stopping"]
    assert report["stopped"] is True
    assert report["reason"] == "patience_exhausted"
    assert report["stopped_epoch"] == 3
    assert report["best"] == 2.0
    assert "val/score" in report["message"]
    assert stop.extra_results("test") == {}


def test_not_stopped_when_the_metric_keeps_improving(tmp_path: Path) -> None:
    stop, _ = fit(tmp_path, epochs=2)
    report = stop.extra_results("val")["early_stopping"]
    assert report["stopped"] is False and report["stopped_epoch"] is None
    assert report["reason"] == "not_stopped"


def test_a_resumed_run_keeps_the_patience_count(tmp_path: Path) -> None:
    fit(tmp_path, epochs=3)  # epochs 0-2: epoch 2 is the first without improvement
    stop, trainer = fit(tmp_path, epochs=8, resume=tmp_path / "ckpt" / "last.ckpt")
    # without the restored count and best, epochs 3-7 would all improve on a fresh start
    assert stop.extra_results("val")["early_stopping"]["stopped_epoch"] == 3
    assert trainer.current_epoch == 4
