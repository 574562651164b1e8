"""BatchedRPN: target assignment and proposal filtering bit-identical to torchvision's per-image
loops (ties, images without boxes, boxes outside the image, different image sizes), and a whole
Faster R-CNN step with the same losses."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.rpn import RegionProposalNetwork

from visionkit.models.heads.rpn import BatchedRPN
from visionkit.registries import HEADS, NECKS


def _head(backbone: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    neck = NECKS.build({"name": "fpn", "out_channels": 16, "in_indices": [1, 2, 3]}, backbone.feature_info)  # fmt: skip
    spec = {"name": "fasterrcnn", "min_size": 64, "max_size": 64, "representation_size": 32}
    return neck, HEADS.build(spec, neck.feature_info, 3)


def _boxes(n: int, size: float, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * size
    wh = torch.rand(n, 2, generator=gen) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1)


def test_assign_targets_equals_torchvision(backbone: torch.nn.Module) -> None:
    _, head = _head(backbone)
    rpn = head.detector.rpn
    assert isinstance(rpn, BatchedRPN)
    gen = torch.Generator().manual_seed(0)
    grid = _boxes(300, 64, gen)
    anchors = [grid.clone() for _ in range(5)]
    dup = _boxes(2, 64, gen)
    targets = [
        {"boxes": torch.cat([dup, dup[:1]])},  # a duplicated box: ties between boxes
        {"boxes": torch.zeros((0, 4))},  # no boxes: all background
        {"boxes": grid[7:8].clone()},  # a box equal to an anchor (IoU 1)
        {"boxes": _boxes(6, 64, gen)},
        {"boxes": torch.tensor([[200.0, 200.0, 210.0, 210.0]])},  # overlaps no anchor
    ]
    want = RegionProposalNetwork.assign_targets_to_anchors(rpn, anchors, targets)
    got = rpn.assign_targets_to_anchors(anchors, targets)
    for w, g in zip([*want[0], *want[1]], [*got[0], *got[1]], strict=True):
        assert w.dtype == g.dtype and w.shape == g.shape
        assert torch.equal(w, g)
    assert {-1.0, 0.0, 1.0} <= set(torch.cat(got[0]).tolist())  # every label kind was exercised


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shapes", [[(64, 64)] * 3, [(64, 64), (40, 64), (64, 30)]])
def test_filter_proposals_equals_torchvision(backbone: torch.nn.Module, training: bool, shapes: list) -> None:  # fmt: skip
    _, head = _head(backbone)
    rpn = head.detector.rpn.train(training)
    rpn.min_size, rpn.score_thresh = 2.0, 0.2  # so both filters remove something
    gen = torch.Generator().manual_seed(1)
    levels = [400, 100, 25]
    n = len(shapes)
    proposals = _boxes(n * sum(levels), 70, gen).reshape(n, -1, 4) - 5  # some outside the image
    proposals[:, ::17, 2:] = proposals[:, ::17, :2] + 0.5  # some too small
    objectness = torch.randn(n * sum(levels), 1, generator=gen)
    want = RegionProposalNetwork.filter_proposals(rpn, proposals, objectness, shapes, levels)
    got = rpn.filter_proposals(proposals, objectness, shapes, levels)
    for w, g in zip([*want[0], *want[1]], [*got[0], *got[1]], strict=True):
        assert torch.equal(w, g)
    assert all(len(b) for b in got[0])


def test_training_step_losses_equal_torchvision(backbone: torch.nn.Module) -> None:
    neck, head = _head(backbone)
    gen = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 64, 64, generator=gen) for _ in range(3)]
    targets = [
        {"boxes": _boxes(k, 48, gen), "labels": torch.randint(0, 3, (k,), generator=gen)}
        for k in (3, 0, 1)
    ]

    def losses() -> dict[str, torch.Tensor]:
        torch.manual_seed(0)  # the samplers draw
        return head(images, targets, lambda x: neck(backbone(x)))

    batched = losses()
    head.detector.rpn.__class__ = RegionProposalNetwork
    reference = losses()
    assert batched.keys() == reference.keys()
    for key in reference:
        assert torch.equal(batched[key], reference[key]), key
