"""Class weights follow their formulas; the classes per sample and per-class counts come from the
annotations in the real formats (COCO json, mask PNGs), crowd excluded, ignore pixels excluded;
``task.class_weights=<method>`` reaches the task's loss."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from visionkit.data.imbalance import class_counts, class_weights, sample_classes
from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import DATASETS

COUNTS = [100, 10, 1, 0]


def _dm(task: str, **cfg):
    load_builtins()
    dm = DATASETS.build({"num_workers": 0, "batch_size": 4, "image_size": 16, **cfg}, task=task)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize(
    "method,raw",
    [
        ("inverse", lambda n: 1 / n),
        ("sqrt_inverse", lambda n: 1 / np.sqrt(n)),
        ("effective_number", lambda n: (1 - 0.99) / (1 - 0.99**n)),
    ],
)
def test_class_weights_follow_their_formulas(method: str, raw) -> None:
    w = np.array(class_weights(COUNTS, method, beta=0.99))
    n = np.array(COUNTS[:3], dtype=float)
    expected = raw(n) * 3 / raw(n).sum()  # mean 1 over the classes present
    np.testing.assert_allclose(w[:3], expected, rtol=1e-12)
    assert w[3] == w[:3].max()  # absent from training: the largest weight
    assert w[2] > w[1] > w[0]


def test_effective_number_spans_inverse_and_uniform() -> None:
    """beta -> 0 gives equal weights, beta -> 1 the inverse frequency (Cui et al.)."""
    np.testing.assert_allclose(class_weights(COUNTS[:3], "effective_number", 0.0), [1, 1, 1])
    np.testing.assert_allclose(
        class_weights(COUNTS[:3], "effective_number", 1 - 1e-9),
        class_weights(COUNTS[:3], "inverse"),
        rtol=1e-5,
    )


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="class_weights='inv'"):
        class_weights(COUNTS, "inv")


def test_coco_sample_classes_leave_crowd_out(tmp_path: Path, formats) -> None:
    root = formats.coco(tmp_path / "coco", n=4)
    dm = _dm("detection", name="coco", root=str(root))
    # images alternate categories 5 and 17 (indices 0, 1); image 0's crowd region (17) is not one
    assert sample_classes(dm.datasets["train"], "detection") == [[0], [1], [0], [1]]
    assert class_counts(dm.datasets["train"], "detection", 2).tolist() == [2, 2]


def test_mask_pixel_counts_by_class(tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "masks", n=4, size=24)
    dm = _dm("semantic_segmentation", name="masks", root=str(root))
    counts = class_counts(dm.datasets["train"], "semantic_segmentation", dm.num_classes)
    # per mask: row 0 ignore; rows 1-11 road (3); rows 12-23 left half car (8), right background
    assert counts.tolist() == [4 * 12 * 12, 4 * 11 * 24, 4 * 12 * 12]


def test_task_class_weights_method_reaches_the_loss(tmp_path: Path, formats) -> None:
    from tests.test_configs import compose_cfg
    from visionkit import runner

    root = formats.masks(tmp_path / "masks", n=2, size=24)
    cfg = compose_cfg([
        "task=semantic_segmentation", "data=masks", f"data.root={root}", "data.num_workers=0",
        "task.class_weights=sqrt_inverse", "model/head=fcn",
    ])  # fmt: skip
    dm = runner.build_datamodule(cfg)
    task = runner.build_task(cfg, dm)
    expected = class_weights([2 * 144, 2 * 264, 2 * 144], "sqrt_inverse")
    np.testing.assert_allclose(task.criterion.weight.numpy(), expected, rtol=1e-6)
    assert task.hparams["class_weights"] == pytest.approx(expected)  # checkpoints keep the list


def test_a_loss_without_class_weights_is_a_config_error() -> None:
    from visionkit.tasks.base import build_criterion

    with pytest.raises(ConfigError, match="takes no class weights"):
        build_criterion("dice", [1.0, 2.0], 2)


def test_detection_class_weights_reach_the_focal_loss(tmp_path: Path, formats) -> None:
    """``task.class_weights=<method>`` on COCO detection data: the retinanet head's focal loss holds
    the weights of the training images' class counts (background column 1), a rebuilt task too;
    Faster R-CNN's softmax loss takes none: one ConfigError naming the head."""
    from tests.test_configs import compose_cfg
    from visionkit import runner

    root = formats.coco(tmp_path / "coco", n=5)  # 3 images of category 5, 2 of 17
    base = ["task=detection", "data=coco", f"data.root={root}", "data.num_workers=0", "task.class_weights=inverse"]  # fmt: skip
    cfg = compose_cfg([*base, "model/head=retinanet"])
    dm = runner.build_datamodule(cfg)
    task = runner.build_task(cfg, dm)
    expected = class_weights([3, 2], "inverse")
    np.testing.assert_allclose(task.head.detector.head.class_weight.numpy(), [1.0, *expected], rtol=1e-6)  # fmt: skip
    rebuilt = type(task)(**task.hparams)  # what a checkpoint restores
    np.testing.assert_allclose(rebuilt.head.detector.head.class_weight.numpy(), [1.0, *expected], rtol=1e-6)  # fmt: skip
    with pytest.raises(ConfigError, match="the fasterrcnn head's classification loss takes no class weights"):  # fmt: skip
        runner.build_task(compose_cfg([*base, "model/head=fasterrcnn"]), dm)
