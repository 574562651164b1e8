"""Test-time augmentation against its definition: averaged softmax over the views for class and
dense logits, detections mapped back to the original image (flips exact, scales within a pixel),
weighted boxes fusion and NMS by their formulas, detector min/max size scaled and restored."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.callbacks.finetune_toy import make_task
from visionkit.errors import ConfigError
from visionkit.tta import (
    TestTimeAugmentation,
    enable_tta,
    nms_merge,
    scaled_sizes,
    weighted_boxes_fusion,
)

X = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_classification_averages_the_views_probabilities() -> None:
    task = make_task().eval()
    with torch.no_grad():
        views = [task(X), task(X.flip(-1)), task(F.interpolate(X, size=(24, 24), mode="bilinear"))]
        expected = torch.stack([v.softmax(1) for v in views]).mean(0)
        enable_tta(task, {"flips": ["none", "hflip"], "scales": [1.0, 1.5]})
        out = task(X)
    views.append(task.__class__.forward(task, F.interpolate(X, size=(24, 24), mode="bilinear").flip(-1)))  # fmt: skip
    expected = (expected * 3 + views[-1].softmax(1)) / 4
    torch.testing.assert_close(out.softmax(1), expected, rtol=1e-5, atol=1e-6)
    task.train()  # training is never augmented
    torch.testing.assert_close(task(X), task.__class__.forward(task, X))


class Pointwise(nn.Module):
    """Dense logits that depend on each pixel only: flip- and scale-equivariant, so merged views
    equal the plain output only when every view is mapped back to the original pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_dense_views_come_back_to_the_original_pixels() -> None:
    model = Pointwise().eval()
    x = torch.zeros(1, 3, 16, 16)
    x[..., :, :5] = 1.0  # left stripe: a mirror image not flipped back would move it right
    plain = model(x).softmax(1)
    enable_tta(model, {"flips": ["none", "hflip", "vflip"], "scales": [1.0]})
    torch.testing.assert_close(model(x).softmax(1), plain, rtol=1e-5, atol=1e-6)
    enable_tta(model, {"flips": ["none", "hflip"], "scales": [0.5, 2.0]})
    merged = model(x).softmax(1)
    assert merged.shape == plain.shape
    # away from the stripe's edge (where resizing blurs) the scaled views agree too
    torch.testing.assert_close(merged[..., 1:3], plain[..., 1:3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(merged[..., 8:], plain[..., 8:], atol=1e-4, rtol=1e-4)


class BrightBox(nn.Module):
    """A 'detector' boxing the pixels brighter than 0.5 (label 1, score 0.9)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for img in images:
            ys, xs = torch.nonzero(img.mean(0) > 0.5, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)  # fmt: skip
            out.append({"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])})
        return out


@pytest.mark.parametrize("merge", ["wbf", "nms"])
def test_detections_are_in_the_original_image_coordinates(merge: str) -> None:
    img = torch.zeros(3, 32, 48)
    img[:, 4:12, 6:20] = 1.0  # box (6, 4, 20, 12): off-centre in both directions
    model = BrightBox()
    enable_tta(model, {"flips": ["none", "hflip", "vflip"], "box_merge": merge})
    out = model([img])[0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[6.0, 4.0, 20.0, 12.0]]))
    torch.testing.assert_close(out["scores"], torch.tensor([0.9]))  # all 3 views agree
    enable_tta(model, {"flips": ["none", "hflip"], "scales": [0.5, 1.0, 2.0], "box_merge": merge})
    out = model([img])[0]
    assert len(out["boxes"]) == 1
    assert (out["boxes"] - torch.tensor([[6.0, 4.0, 20.0, 12.0]])).abs().max() <= 1.0


def test_weighted_boxes_fusion_follows_its_formula() -> None:
    a = {"boxes": torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60]]), "scores": torch.tensor([0.8, 0.3]), "labels": torch.tensor([0, 0])}  # fmt: skip
    b = {"boxes": torch.tensor([[1.0, 1, 11, 11], [0, 0, 10, 10]]), "scores": torch.tensor([0.4, 0.5]), "labels": torch.tensor([0, 1])}  # fmt: skip
    out = weighted_boxes_fusion([a, b], iou_thresh=0.5, max_detections=10)
    # cluster of label 0: boxes a0 (0.8) and b0 (0.4) -> score-weighted mean, mean score x 2/2
    fused = (0.8 * torch.tensor([0.0, 0, 10, 10]) + 0.4 * torch.tensor([1.0, 1, 11, 11])) / 1.2
    by_score = {round(float(s), 4): (bx, int(lb)) for s, bx, lb in zip(out["scores"], out["boxes"], out["labels"], strict=True)}  # fmt: skip
    assert set(by_score) == {0.6, 0.25, 0.15}  # (0.8+0.4)/2; 0.5*1/2 (label 1 alone); 0.3*1/2
    torch.testing.assert_close(by_score[0.6][0], fused)
    assert by_score[0.25][1] == 1  # overlapping boxes of other labels never fuse
    nms = nms_merge([a, b], iou_thresh=0.5, max_detections=10)
    assert sorted(nms["scores"].tolist()) == pytest.approx([0.3, 0.5, 0.8])  # b0 suppressed


def test_detector_sizes_are_scaled_for_a_view_and_restored() -> None:
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    t = GeneralizedRCNNTransform(64, 106, [0.5] * 3, [0.25] * 3)
    with scaled_sizes([t], 1.5):
        assert t.min_size == (96,) and t.max_size == 159
    assert t.min_size == (64,) and t.max_size == 106


@pytest.mark.parametrize("spec,key", [
    ({"flips": ["rot90"]}, "tta.flips"), ({"scales": [0]}, "tta.scales"),
    ({"box_merge": "soft"}, "tta.box_merge"), ({"scale": [1.0]}, "tta.scale"),
])  # fmt: skip
def test_bad_tta_config_is_one_config_error(spec: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        enable_tta(nn.Linear(1, 1), spec)


def test_views_are_every_flip_at_every_scale() -> None:
    tta = TestTimeAugmentation(flips=("none", "hflip"), scales=(1.0, 2.0))
    assert tta.views == [("none", 1.0), ("hflip", 1.0), ("none", 2.0), ("hflip", 2.0)]
    assert math.isclose(tta.iou_thresh, 0.55)
