"""Detector heads (torchvision) on two backbones + fpn: losses, outputs, no duplicated backbone."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.registries import HEADS, NECKS

DETECTORS = {
    "fasterrcnn": {"name": "fasterrcnn", "min_size": 64, "max_size": 64, "representation_size": 32},
    "retinanet": {"name": "retinanet", "min_size": 64, "max_size": 64},
    "fcos": {"name": "fcos", "min_size": 64, "max_size": 64, "num_convs": 1},
    "rtdet": {"name": "rtdet", "min_size": 64, "max_size": 64, "num_convs": 1},
    "maskrcnn": {
        "name": "maskrcnn",
        "min_size": 64,
        "max_size": 64,
        "representation_size": 32,
        "mask_channels": 8,
    },
}
RCNN_FAST = {"rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100, "box_batch_size_per_image": 64}  # fmt: skip
for _name in ("fasterrcnn", "maskrcnn"):
    DETECTORS[_name].update(RCNN_FAST)
K = 2


def batch(masks: bool) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Two 64 px images: one bright square (class 1) on the first, a bar (class 0) and nothing else."""
    images = [torch.full((3, 64, 64), 0.2), torch.full((3, 64, 64), 0.2)]
    images[0][:, 12:40, 16:44] = 0.9
    images[1][0, 40:56, 4:60] = 0.9
    targets = [
        {"boxes": torch.tensor([[16.0, 12.0, 44.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[4.0, 40.0, 60.0, 56.0]]), "labels": torch.tensor([0])},
    ]
    if masks:
        for t in targets:
            x1, y1, x2, y2 = t["boxes"][0].int().tolist()
            m = torch.zeros(1, 64, 64, dtype=torch.uint8)
            m[0, y1:y2, x1:x2] = 1
            t["masks"] = m
    return images, targets


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_detector_trains_and_predicts_on_task_features(
    backbone: torch.nn.Module, name: str
) -> None:
    torch.manual_seed(0)
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    head = HEADS.build(DETECTORS[name], neck.feature_info, K)
    # the detector holds no backbone or neck parameters: they are registered once, in the task
    own = {id(p) for p in head.parameters()}
    assert not own & {id(p) for p in [*backbone.parameters(), *neck.parameters()]}
    assert not any("backbone.stages" in k or k.startswith("fpn") for k in head.state_dict())

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        return neck(backbone(x))

    images, targets = batch(masks=name == "maskrcnn")
    params = [*backbone.parameters(), *neck.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=2e-3)
    head.train()
    totals = []
    for _ in range(8):
        losses = head(images, targets, features)
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        # rtdet's class target is its boxes' IoU (varifocal): that loss rises while boxes improve
        totals.append(losses["loss_box"].item() if name == "rtdet" else total.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    assert min(totals[-3:]) < (0.9 if name == "rtdet" else 0.8) * totals[0], totals
    head.eval()
    with torch.no_grad():
        out = head(images, None, features)
    assert len(out) == 2
    for det in out:
        assert det["boxes"].shape[1:] == (4,)
        assert len(det["labels"]) == len(det["scores"]) == len(det["boxes"])
        assert (
            (det["labels"] >= 0) & (det["labels"] < K)
        ).all()  # contiguous labels, no background
        if name == "maskrcnn":
            assert det["masks"].shape[1:] == (1, 64, 64)


def test_anchor_sizes_must_match_the_levels() -> None:
    from visionkit.models.backbones.base import FeatureInfo

    info = [FeatureInfo(8, 8), FeatureInfo(8, 16)]
    with pytest.raises(ConfigError, match="anchor_sizes"):
        HEADS.build({"name": "fasterrcnn", "anchor_sizes": [[32]]}, info, 2)


def test_detector_without_neck_names_the_fix() -> None:
    from visionkit.models.backbones.base import FeatureInfo

    with pytest.raises(ConfigError, match="neck"):
        HEADS.build("retinanet", [FeatureInfo(8, 8), FeatureInfo(16, 16)], 2)


def test_score_threshold_and_detections_per_image_are_applied(backbone: torch.nn.Module) -> None:
    neck = NECKS.build({"name": "fpn", "out_channels": 8}, backbone.feature_info)
    spec = {**DETECTORS["retinanet"], "score_thresh": 0.0, "detections_per_img": 3}
    head = HEADS.build(spec, neck.feature_info, K).eval()
    images, _ = batch(masks=False)
    with torch.no_grad():
        out = head(images, None, lambda x: neck(backbone(x)))
    assert all(len(d["boxes"]) == 3 for d in out)
    head.set_thresholds(score_thresh=1.01)
    with torch.no_grad():
        out = head(images, None, lambda x: neck(backbone(x)))
    assert all(len(d["boxes"]) == 0 for d in out)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_unknown_detector_option_is_rejected_not_ignored(backbone: torch.nn.Module, name: str):
    # torchvision passes unknown keywords on to its image transform, which drops them silently
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    with pytest.raises(
        ConfigError,
        match=rf"{name}: unknown option\(s\) \['detections_per_imgs'\].*Did you mean detections_per_img\?",
    ):
        HEADS.build({**DETECTORS[name], "detections_per_imgs": 0.5}, neck.feature_info, K)
    spec = {**DETECTORS[name], "size_divisible": 16}  # a transform option: accepted
    assert HEADS.build(spec, neck.feature_info, K).detector.transform.size_divisible == 16


@pytest.mark.parametrize("name", sorted(set(DETECTORS) - {"rtdet"}))  # rtdet: its own test_rtdet.py
def test_image_size_keeps_torchvision_ratio_without_max_size(
    backbone: torch.nn.Module, name: str
) -> None:
    """max_size null -> min_size * 1333 / 800 (torchvision's defaults 800 and 1333)."""
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    head = HEADS.build({**DETECTORS[name], "min_size": 96, "max_size": None}, neck.feature_info, K)
    transform = head.detector.transform
    assert (transform.min_size, transform.max_size) == ((96,), 160)
    resized, _ = transform([torch.rand(3, 64, 64), torch.rand(3, 120, 300)])
    # the shorter side goes to 96 unless the longer would pass 160
    assert resized.image_sizes == [(96, 96), (64, 160)]
    default = HEADS.build({"name": name}, neck.feature_info, K).detector.transform
    assert (default.min_size, default.max_size) == ((800,), 1333)


def test_image_size_below_one_or_max_below_min_is_refused(backbone: torch.nn.Module) -> None:
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    for sizes in ({"min_size": 0}, {"min_size": 64, "max_size": 32}):
        with pytest.raises(ConfigError, match=r"model\.head\.min_size"):
            HEADS.build({"name": "retinanet", **sizes}, neck.feature_info, K)
