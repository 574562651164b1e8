"""The bias/variance diagnosis on constructed metric histories, one per case, and the plot."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from visionkit.diagnosis import diagnose, format_diagnosis, plot_learning_curves

THRESHOLDS = {"low_train_metric": 0.7, "gap": 0.1, "patience": 2, "min_delta": 0.005}


def test_underfitting_when_the_training_metric_itself_stays_low() -> None:
    train = [0.30, 0.40, 0.45, 0.48, 0.50]
    val = [0.28, 0.38, 0.43, 0.45, 0.47]
    d = diagnose(train, val, metric="acc", **THRESHOLDS)
    assert d["verdict"] == "underfitting"
    assert d["high_bias"] and not d["high_variance"]
    assert d["train_best"] == 0.50 and d["best_epoch"] == 4
    assert any("capacity" in s for s in d["suggestions"])
    assert not any("augmentation (data" in s for s in d["suggestions"])


def test_overfitting_when_the_gap_grows_after_validation_peaks() -> None:
    train = [0.60, 0.75, 0.85, 0.93, 0.97, 0.99]
    val = [0.58, 0.70, 0.74, 0.73, 0.71, 0.70]
    d = diagnose(train, val, epochs=[0, 1, 2, 3, 4, 5], metric="acc", **THRESHOLDS)
    assert d["verdict"] == "overfitting"
    assert d["best_epoch"] == 2 and d["val_best"] == 0.74 and d["val_last"] == 0.70
    assert d["gap_last"] == pytest.approx(0.29) and d["gap_at_best"] == pytest.approx(0.11)
    assert d["val_stalled"]
    assert any("more training data" in s for s in d["suggestions"])
    assert any("early stopping" in s for s in d["suggestions"])


def test_both_when_training_is_low_and_validation_falls_behind() -> None:
    train = [0.30, 0.45, 0.55, 0.62, 0.66, 0.68]
    val = [0.28, 0.40, 0.42, 0.41, 0.40, 0.39]
    d = diagnose(train, val, metric="mIoU", **THRESHOLDS)
    assert d["verdict"] == "both"
    assert d["high_bias"] and d["high_variance"] and d["best_epoch"] == 2
    assert any("capacity" in s for s in d["suggestions"])
    assert any("more training data" in s for s in d["suggestions"])


def test_neither_when_train_is_high_and_validation_follows() -> None:
    train = [0.70, 0.85, 0.92, 0.95, 0.96]
    val = [0.68, 0.83, 0.90, 0.92, 0.94]
    d = diagnose(train, val, metric="acc", **THRESHOLDS)
    assert d["verdict"] == "neither" and d["best_epoch"] == 4
    assert d["suggestions"] == ["validation was still improving: training longer may help"]


@pytest.mark.parametrize(
    ("val", "verdict"),
    [
        # a large gap alone is not overfitting while validation still improves
        ([0.50, 0.60, 0.70, 0.75, 0.80], "neither"),
        # validation stalled but the gap did not grow since the peak
        ([0.80, 0.94, 0.94, 0.94, 0.94], "neither"),
    ],
)
def test_overfitting_needs_a_stalled_validation_and_a_grown_gap(val: list[float], verdict: str) -> None:  # fmt: skip
    train = [0.90, 0.99, 0.99, 0.99, 0.99] if val[0] == 0.80 else [0.90, 0.95, 0.97, 0.98, 0.99]
    assert diagnose(train, val, **THRESHOLDS)["verdict"] == verdict


def test_thresholds_are_what_decides() -> None:
    train = [0.60, 0.65, 0.66]
    val = [0.55, 0.60, 0.61]
    assert diagnose(train, val, **{**THRESHOLDS, "low_train_metric": 0.7})["verdict"] == "underfitting"  # fmt: skip
    assert diagnose(train, val, **{**THRESHOLDS, "low_train_metric": 0.5})["verdict"] == "neither"  # fmt: skip


def test_min_mode_uses_the_gap_only_and_missing_values_are_skipped() -> None:
    train = [1.0, 0.6, 0.3, 0.1, 0.05]  # a loss: lower is better
    val = [1.1, 0.7, 0.6, 0.65, 0.8]
    d = diagnose(train, val, metric="loss", mode="min", **THRESHOLDS)
    assert d["verdict"] == "overfitting" and d["best_epoch"] == 2
    assert d["gap_last"] == pytest.approx(0.75)
    d = diagnose([None, 0.5, 0.6, math.nan], [0.4, None, 0.45, 0.44], **THRESHOLDS)
    assert d["epochs"] == 3 and d["best_epoch"] == 2 and d["train_best"] == 0.6
    assert "gap_last" not in d  # no training value at the last epoch


def test_unknown_without_metrics() -> None:
    assert diagnose([None], [None])["verdict"] == "unknown"
    d = diagnose([None, None], [0.5, 0.6])
    assert d["verdict"] == "unknown" and "train_images" in d["reasons"][0]


def test_report_text_and_plot(tmp_path: Path) -> None:
    d = diagnose([0.6, 0.9, 0.99, 1.0], [0.6, 0.8, 0.78, 0.75], **THRESHOLDS)
    text = format_diagnosis(d)
    assert text.splitlines()[0] == "diagnosis (metric): overfitting" and "try:" in text
    history = {
        "epoch": [0, 1, 2, 3],
        "train_loss": [1.0, 0.5, None, 0.2],
        "train_eval_loss": [0.9, 0.4, 0.2, 0.1],
        "train_metric": [0.6, 0.9, 0.99, 1.0],
        "val_loss": [1.0, 0.6, 0.7, 0.8],
        "val_metric": [0.6, 0.8, 0.78, 0.75],
        "lr": [{"backbone.0": 1e-3, "head": 1e-2}] * 4,
    }
    path = plot_learning_curves(history, tmp_path / "lc.png", "acc", "acc: overfitting")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
