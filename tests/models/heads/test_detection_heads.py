"""Detector heads (torchvision) on two backbones + fpn: losses, outputs, no duplicated backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.registries import HEADS, NECKS

DETECTORS = {
    "fasterrcnn": {"name": "fasterrcnn", "min_size": 64, "max_size": 64, "representation_size": 32},
    "retinanet": {"name": "retinanet", "min_size": 64, "max_size": 64},
    "fcos": {"name": "fcos", "min_size": 64, "max_size": 64, "num_convs": 1},
    "rtdet": {"name": "rtdet", "min_size": 64, "max_size": 64, "num_convs": 1},
    "rtdet_seg": {"name": "rtdet_seg", "min_size": 64, "max_size": 64, "num_protos": 8},
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
DETECTORS["rtdet_seg"]["num_convs"] = 1
K = 2
MASKS = ("maskrcnn", "rtdet_seg")  # heads that segment instances


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

    images, targets = batch(masks=name in MASKS)
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
        rtdet = losses["loss_box"] + losses.get("loss_mask", 0) if name.startswith("rtdet") else total  # fmt: skip
        totals.append(rtdet.item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    assert min(totals[-3:]) < (0.9 if name.startswith("rtdet") else 0.8) * totals[0], totals
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
        if name in MASKS:
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
    strict = HEADS.build({**spec, "score_thresh": 1.01}, neck.feature_info, K).eval()
    strict.load_state_dict(head.state_dict())
    with torch.no_grad():
        out = strict(images, None, lambda x: neck(backbone(x)))
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


@pytest.mark.parametrize(
    "name", sorted(set(DETECTORS) - {"rtdet", "rtdet_seg"})
)  # rtdet: its own test_rtdet.py
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


def _focal_oracle(logits: np.ndarray, labels: np.ndarray, weight: np.ndarray) -> float:
    """Sum over anchors (labels >= -1) of w_label * sum_c alpha_t (1 - p_t)^2 CE, written out."""
    keep = labels >= -1
    x, lab = logits[keep].astype(np.float64), labels[keep]
    t = np.zeros_like(x)
    fg = lab >= 0
    t[np.nonzero(fg)[0], lab[fg]] = 1.0
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)
    w = np.where(fg, weight[np.clip(lab, 0, None)], 1.0)
    return float((w * (alpha_t * (1 - p_t) ** 2 * ce).sum(1)).sum())


def test_class_weighted_focal_loss_follows_its_formula() -> None:
    from visionkit.models.heads.detector_base import class_weighted_focal_loss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 4, generator=g, dtype=torch.float64) * 3
    labels = torch.tensor([1, 2, 3, -1, -2] * 8)  # detector classes, background, between thresholds
    weight = torch.tensor([1.0, 0.5, 4.0, 2.0], dtype=torch.float64)
    got = class_weighted_focal_loss(logits, labels, weight)
    expected = _focal_oracle(logits.numpy(), labels.numpy(), weight.numpy())
    assert got.item() == pytest.approx(expected, rel=1e-10)


def _loss_inputs(name: str, n_classes: int) -> tuple:
    """compute_loss inputs of torchvision's RetinaNet / FCOS head for 2 images of 60 anchors:
    anchors inside both boxes, matched to box 0 or 1, background (-1) or (RetinaNet) ignored (-2)."""
    g = torch.Generator().manual_seed(1)
    n = 60
    anchors = [torch.tensor([[10.0, 10.0, 20.0, 20.0]]).repeat(n, 1)] * 2
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [5.0, 5.0, 30.0, 30.0]])
    targets = [{"boxes": boxes, "labels": torch.tensor([1, 2])}, {"boxes": boxes[:1], "labels": torch.tensor([2])}]  # fmt: skip
    codes = [0, 1, -1, -2] if name == "retinanet" else [0, 1, -1, -1]
    matched = [torch.tensor(codes * (n // 4)), torch.tensor([0, -1, -1] * (n // 3))]
    outputs = {
        "cls_logits": torch.randn(2, n, n_classes, generator=g),
        "bbox_regression": torch.rand(2, n, 4, generator=g),
        "bbox_ctrness": torch.randn(2, n, 1, generator=g),
    }
    return targets, outputs, anchors, matched


@pytest.mark.parametrize("name", ["retinanet", "fcos"])
def test_class_weights_reach_the_focal_loss(backbone: torch.nn.Module, name: str) -> None:
    """Weights 1 give torchvision's loss; weights w give the formula, normalised as torchvision
    does (RetinaNet: per image by its foreground anchors, mean over images; FCOS: by all)."""
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    head = HEADS.build(DETECTORS[name], neck.feature_info, K)
    tv_head = head.detector.head
    inputs = _loss_inputs(name, K + 1)
    plain = tv_head.compute_loss(*inputs)
    head.set_class_weights([1.0, 1.0])
    ones = tv_head.compute_loss(*inputs)
    for key in plain:
        torch.testing.assert_close(ones[key], plain[key])
    head.set_class_weights([0.25, 3.0])  # classes 0, 1 = detector classes 1, 2
    weighted = tv_head.compute_loss(*inputs)
    targets, outputs, _, matched = inputs
    weight = np.array([1.0, 0.25, 3.0])
    labels = [np.where(m.numpy() >= 0, t["labels"].numpy()[m.clamp(min=0).numpy()], m.numpy()) for t, m in zip(targets, matched, strict=True)]  # fmt: skip
    logits = outputs["cls_logits"].numpy()
    if name == "retinanet":
        expected = np.mean([_focal_oracle(x, lab, weight) / max(1, (lab >= 0).sum()) for x, lab in zip(logits, labels, strict=True)])  # fmt: skip
    else:
        lab = np.concatenate(labels)
        expected = _focal_oracle(logits.reshape(-1, K + 1), lab, weight) / max(1, (lab >= 0).sum())  # fmt: skip
    assert weighted["classification"].item() == pytest.approx(expected, rel=1e-5)
    assert weighted["classification"].item() != pytest.approx(plain["classification"].item(), rel=1e-3)  # fmt: skip
    for key in set(plain) - {"classification"}:  # the box losses do not change
        torch.testing.assert_close(weighted[key], plain[key])
    assert "class_weight" not in "".join(
        head.state_dict()
    )  # checkpoints: kept as task.class_weights


@pytest.mark.parametrize("name", ["fasterrcnn", "maskrcnn"])
def test_class_weights_on_a_softmax_head_are_a_config_error(backbone: torch.nn.Module, name: str) -> None:  # fmt: skip
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    head = HEADS.build(DETECTORS[name], neck.feature_info, K)
    with pytest.raises(ConfigError, match=f"task.class_weights: the {name} head.*retinanet"):
        head.set_class_weights([1.0, 2.0])
