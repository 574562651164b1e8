"""Every format feeds a one-batch training step of each task it serves (tiny plain-torch models:
a CNN for classification / semantic segmentation, torchvision detectors for boxes and masks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from visionkit.data.labels import IGNORE_INDEX, to_detector_labels
from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import DATASETS

load_builtins()

SERVES = {
    "shapes": ["classification", "semantic_segmentation", "detection", "instance_segmentation"],
    "coco": ["classification", "semantic_segmentation", "detection", "instance_segmentation"],
    "imagefolder": ["classification"],
    "masks": ["semantic_segmentation"],
    "digits": ["classification"],
}
CASES = [(fmt, task) for fmt, tasks in SERVES.items() for task in tasks]


def _config(fmt: str, root: Path, formats=None) -> dict:
    common = {"name": fmt, "num_workers": 0, "batch_size": 4, "image_size": 32}
    if fmt == "shapes":
        return {**common, "root": str(root / "shapes"), "num_train": 8, "num_val": 4,
                "num_test": 0, "max_objects": 3}  # fmt: skip
    if fmt == "coco":
        return {**common, "root": str(formats.coco(root / "coco"))}
    if fmt == "imagefolder":
        return {**common, "root": str(formats.imagefolder(root / "folders"))}
    if fmt == "masks":
        return {**common, "root": str(formats.masks(root / "masks"))}
    return common


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory, formats) -> dict[str, dict]:
    """One tiny dataset per format, written once for the module."""
    root = tmp_path_factory.mktemp("formats")
    return {fmt: _config(fmt, root, formats) for fmt in SERVES}


def _tiny_cnn(out: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, out, 1))


def _step(task: str, batch, num_classes: int) -> torch.Tensor:
    images, targets = batch
    if task == "classification":
        model = nn.Sequential(_tiny_cnn(num_classes), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        return nn.functional.cross_entropy(model(images), targets)
    if task == "semantic_segmentation":
        assert targets.dtype == torch.int64 and targets.shape == (
            images.shape[0],
            *images.shape[2:],
        )
        valid = targets[targets != IGNORE_INDEX]
        assert valid.numel() and int(valid.max()) < num_classes
        return nn.functional.cross_entropy(_tiny_cnn(num_classes)(images), targets,
                                           ignore_index=IGNORE_INDEX)  # fmt: skip
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    backbone.out_channels = 8
    anchors = AnchorGenerator(((8, 16),), ((1.0,),))
    kw = {"num_classes": None, "rpn_anchor_generator": anchors, "min_size": 32,
          "max_size": 32, "rpn_batch_size_per_image": 16, "box_batch_size_per_image": 16,
          "box_head": TwoMLPHead(8 * 7 * 7, 16), "box_predictor": FastRCNNPredictor(16, num_classes + 1)}  # fmt: skip
    if task == "instance_segmentation":
        model = MaskRCNN(backbone, mask_head=MaskRCNNHeads(8, [8], 1),
                         mask_predictor=MaskRCNNPredictor(8, 8, num_classes + 1), **kw)  # fmt: skip
    else:
        model = FasterRCNN(backbone, **kw)
    assert all(img.dtype == torch.float32 and img.min() >= 0 and img.max() <= 1 for img in images)
    for t in targets:
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
        assert isinstance(t["image_id"], int)
        if task == "instance_segmentation":
            assert t["masks"].dtype == torch.uint8 and t["masks"].shape[0] == len(t["boxes"])
    det_targets = [{**t, "labels": to_detector_labels(t["labels"])} for t in targets]
    model.train()
    losses = model(images, det_targets)
    return sum(losses.values())


@pytest.mark.parametrize(("fmt", "task"), CASES)
def test_one_batch_training_step(fmt: str, task: str, configs: dict) -> None:
    torch.manual_seed(0)
    dm = DATASETS.build(configs[fmt], task=task)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    loss = _step(task, batch, dm.num_classes)
    assert torch.isfinite(loss)
    loss.backward()
    val = next(iter(dm.val_dataloader()))
    assert len(val[0]) > 0


@pytest.mark.parametrize("fmt", ["imagefolder", "masks", "digits"])
def test_format_refuses_tasks_it_cannot_serve(fmt: str, configs: dict) -> None:
    other = "detection" if fmt != "masks" else "classification"
    with pytest.raises(ConfigError, match=f"'{fmt}' cannot serve task '{other}'"):
        DATASETS.build(configs[fmt], task=other)


@pytest.mark.parametrize("fmt", sorted(SERVES))
def test_unknown_key_names_key_format_and_accepted_keys(fmt: str, configs: dict) -> None:
    from visionkit.data.datamodule import accepted_keys

    accepted = accepted_keys(DATASETS.get(fmt))
    assert {"root", "batch_size", "image_size", "num_workers"} <= set(accepted)
    assert "task" not in accepted and "self" not in accepted
    with pytest.raises(ConfigError) as info:
        DATASETS.build({**configs[fmt], "max_objectz": 3}, task=SERVES[fmt][0])
    message = str(info.value)
    assert f"data format '{fmt}' takes no key(s) data.max_objectz" in message
    assert f"it accepts: {', '.join(accepted)}" in message
