"""LearningCurves: the training subset (fixed, evenly spaced, evaluation transforms) and its state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.data.conftest import build_shapes
from visionkit.callbacks.learning_curves import HISTORY_KEYS, LearningCurves


def test_training_subset_is_fixed_evenly_spaced_and_not_augmented(data_dir: Path) -> None:
    dm = build_shapes(data_dir / "shapes", "classification")  # 20 training images
    train = dm.datasets["train"]
    callback = LearningCurves(train_images=8)
    loader = callback._train_batches(SimpleNamespace(datamodule=dm), 8)
    assert loader.dataset.indices == np.linspace(0, 19, 8).round().astype(int).tolist()
    assert callback._train_batches(SimpleNamespace(datamodule=dm), 8) is loader  # built once
    assert loader.dataset.dataset.transform is not train.transform  # training keeps augmenting
    first, second = (torch.cat([x for x, _ in loader]) for _ in range(2))
    assert torch.equal(first, second)  # no random augmentation
    eval_pipeline = dm.pipeline(train=False)
    for row, index in enumerate(loader.dataset.indices):  # exactly the evaluation transforms
        train.transform = None
        raw = train[index]
        expected = eval_pipeline(raw)[0]
        assert torch.equal(first[row], expected.as_subclass(torch.Tensor))
    train.transform = dm.pipeline(train=True)
    more = callback._train_batches(SimpleNamespace(datamodule=dm), 50)  # never past the data
    assert len(more.dataset) == 20


def test_history_survives_a_checkpoint() -> None:
    callback = LearningCurves()
    callback.history = {k: [1, 2] for k in HISTORY_KEYS}
    restored = LearningCurves()
    restored.load_state_dict(callback.state_dict())
    assert restored.history == callback.history
    assert restored.extra_results("val") == {}  # nothing before the diagnosis at fit end
    assert restored.final_report() is None


@pytest.mark.parametrize(
    ("overrides", "threshold"),
    [
        (["task=classification"], 0.7),
        (["task=semantic_segmentation"], 0.5),
        (["task=detection"], 0.5),
        (["task=instance_segmentation"], 0.45),
        (["task=detection", "task.low_train_metric=0.3"], 0.3),
    ],
)
def test_low_train_metric_is_the_tasks(overrides: list[str], threshold: float) -> None:
    """The underfitting threshold follows the task's metric scale (0.7 would call a COCO-grade
    detector's mAP@0.5 underfitting), and it is not passed to the task."""
    from tests.test_configs import compose_cfg
    from visionkit.runner import RUN_KEYS, build_callbacks

    cfg = compose_cfg(overrides)
    [curves] = [c for c in build_callbacks(cfg) if isinstance(c, LearningCurves)]
    assert curves.thresholds["low_train_metric"] == threshold
    assert "low_train_metric" in RUN_KEYS
