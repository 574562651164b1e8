"""rtdet: assigner on constructed cases, losses against their formulas, the batched
post-processing against a per-image torchvision loop, the batched transform against torchvision's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import batched_nms, box_iou, nms

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.rtdet import (  # fmt: skip
    ImageTransform,
    TaskAlignedAssigner,
    distribution_focal_loss,
    grouped_nms,
    pairwise_iou,
    varifocal_loss,
)
from visionkit.registries import HEADS

LEVELS = [FeatureInfo(8, 8), FeatureInfo(8, 16)]


def head(**kw):
    torch.manual_seed(0)
    return HEADS.build({"name": "rtdet", "min_size": 64, "max_size": 64, "num_convs": 1, **kw}, LEVELS, 3)  # fmt: skip


def test_assigner_takes_the_best_aligned_candidates_and_resolves_overlaps() -> None:
    # five points on a row (stride 8); box A covers points 0-2, box B points 2-3
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [28.0, 4.0], [60.0, 60.0]])
    strides = torch.full((5,), 8.0)
    gt = torch.tensor([[[0.0, 0.0, 24.0, 8.0], [16.0, 0.0, 32.0, 8.0]]])
    labels = torch.tensor([[0, 1]])
    scores = torch.full((1, 5, 2), 0.5)
    scores[0, 0, 0] = 0.9  # point 0 is the most confident for A
    # predicted boxes: point 2 overlaps B exactly, A partly; the others overlap A moderately
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 8.0], [0.0, 0.0, 16.0, 8.0], [16.0, 0.0, 32.0, 8.0], [20.0, 0.0, 32.0, 8.0], [56.0, 56.0, 64.0, 64.0]]])  # fmt: skip
    assigner = TaskAlignedAssigner(topk=2, alpha=1.0, beta=1.0, center_radius=0.0)
    fg, idx = assigner(scores, boxes, points, strides, gt, labels, torch.tensor([[True, True]]))
    # A: alignment 0.9*2/3 (p0), 0.5*2/3 (p1), 0.5*1/3 (p2) -> p0, p1; B: p2 (0.5*1), p3 (0.5*0.75)
    assert fg[0].tolist() == [True, True, True, True, False]
    assert idx[0, :4].tolist() == [0, 0, 1, 1]
    # B with topk 3 still only has its 2 candidates; A's top 3 include p2, which overlaps B more
    fg, idx = TaskAlignedAssigner(topk=3, alpha=1.0, beta=1.0, center_radius=0.0)(scores, boxes, points, strides, gt, labels, torch.tensor([[True, True]]))  # fmt: skip
    assert fg[0].tolist() == [True, True, True, True, False] and idx[0, 2] == 1
    # the centre radius makes the far point a candidate of nothing, near ones of a tiny box
    tiny = torch.tensor([[[13.0, 3.0, 14.0, 5.0], [0.0, 0.0, 0.0, 0.0]]])
    fg, idx = TaskAlignedAssigner(topk=1, center_radius=1.0)(scores, boxes, points, strides, tiny, labels, torch.tensor([[True, False]]))  # fmt: skip
    assert fg[0].sum() == 1 and idx[0, fg[0]].tolist() == [0]


def test_assigner_without_ground_truth_assigns_nothing() -> None:
    fg, idx = TaskAlignedAssigner()(torch.rand(2, 7, 3), torch.rand(2, 7, 4), torch.rand(7, 2), torch.ones(7), torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool))  # fmt: skip
    assert not fg.any() and fg.shape == idx.shape == (2, 7)


def test_pairwise_iou_equals_torchvision() -> None:
    from torchvision.ops import box_iou

    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 2) * 20, torch.rand(2, 5, 2) * 20
    a, b = torch.cat([a, a + torch.rand(2, 3, 2) * 10 + 1], -1), torch.cat([b, b + torch.rand(2, 5, 2) * 10 + 1], -1)  # fmt: skip
    for i in range(2):
        torch.testing.assert_close(pairwise_iou(a, b)[i], box_iou(a[i], b[i]))


def test_varifocal_loss_formula() -> None:
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    q = torch.tensor([[0.8, 0.0], [0.0, 0.0]])
    p = 1 / (1 + np.exp(-logits.numpy()))
    bce = -(q.numpy() * np.log(p) + (1 - q.numpy()) * np.log(1 - p))
    weight = np.where(q.numpy() > 0, q.numpy(), 0.75 * p**2)
    assert varifocal_loss(logits, q).item() == pytest.approx(float((bce * weight).sum()), rel=1e-5)


def giou(a: np.ndarray, b: np.ndarray) -> float:
    """Generalised IoU of two xyxy boxes (Rezatofighi et al.), the oracle of the box loss."""
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))  # fmt: skip
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    hull = (max(a[2], b[2]) - min(a[0], b[0])) * (max(a[3], b[3]) - min(a[1], b[1]))
    return inter / union - (hull - union) / hull


def test_losses_follow_their_formulas() -> None:
    det = head(box_weight=2.0).detector
    torch.manual_seed(1)
    n, k = 6, 3
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0], [8.0, 8.0], [24.0, 24.0]])  # fmt: skip
    strides = torch.tensor([8.0, 8.0, 8.0, 8.0, 16.0, 16.0])
    logits = torch.randn(1, n, k)
    boxes = torch.cat([points - 5 - torch.rand(n, 2) * 4, points + 5 + torch.rand(n, 2) * 4], -1)[None]  # fmt: skip
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 10.0]]), "labels": torch.tensor([2])}]
    fg, _ = det.assigner(logits.sigmoid(), boxes, points, strides, targets[0]["boxes"][None], targets[0]["labels"][None], torch.tensor([[True]]))  # fmt: skip
    losses = det.loss(logits, boxes, points, strides, targets)
    pos = fg[0].nonzero().flatten().tolist()
    assert pos, "the constructed case has positives"
    gt = targets[0]["boxes"][0].numpy()
    q = torch.zeros(n, k)
    box_sum = 0.0
    for i in pos:
        b = boxes[0, i].numpy()
        iw, ih = max(0, min(b[2], gt[2]) - max(b[0], gt[0])), max(0, min(b[3], gt[3]) - max(b[1], gt[1]))  # fmt: skip
        inter = iw * ih
        q[i, 2] = max(
            float(inter / ((b[2] - b[0]) * (b[3] - b[1]) + 160.0 - inter)), 1e-6
        )  # a positive keeps a target > 0
        box_sum += 1 - giou(b, gt)
    assert losses["loss_cls"].item() == pytest.approx(varifocal_loss(logits[0], q).item() / len(pos), rel=1e-4)  # fmt: skip
    assert losses["loss_box"].item() == pytest.approx(2.0 * box_sum / len(pos), rel=1e-4)


def iou_terms(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """IoU, squared centre distance / squared hull diagonal (DIoU) and CIoU's aspect term v."""
    iw, ih = max(0.0, min(a[2], b[2]) - max(a[0], b[0])), max(0.0, min(a[3], b[3]) - max(a[1], b[1]))  # fmt: skip
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    diag = (max(a[2], b[2]) - min(a[0], b[0])) ** 2 + (max(a[3], b[3]) - min(a[1], b[1])) ** 2
    dist = ((a[0] + a[2] - b[0] - b[2]) / 2) ** 2 + ((a[1] + a[3] - b[1] - b[3]) / 2) ** 2
    v = 4 / math.pi**2 * (math.atan((b[2] - b[0]) / (b[3] - b[1])) - math.atan((a[2] - a[0]) / (a[3] - a[1]))) ** 2  # fmt: skip
    return iw * ih / union, dist / diag, v


def reference_dfl(bins: np.ndarray, target: np.ndarray) -> float:
    """The DFL with plain loops: per row and side, -log softmax at the two bins around the target
    (clamped into [0, R - 0.01]), weighted by the distance to the other one; mean over sides."""
    total = 0.0
    for row, t_row in zip(bins, target, strict=True):
        for side, t in zip(row, t_row, strict=True):
            t = min(max(float(t), 0.0), len(side) - 1 - 0.01)
            lo = math.floor(t)
            logp = side - side.max() - math.log(np.exp(side - side.max()).sum())
            total += (-logp[lo] * (lo + 1 - t) - logp[lo + 1] * (t - lo)) / 4
    return total


def test_distribution_focal_loss_equals_a_plain_loop() -> None:
    torch.manual_seed(0)
    bins = torch.randn(5, 4, 9)
    target = torch.tensor([[0.0, 0.5, 3.25, 7.99], [8.0, 12.0, -1.0, 4.0], *torch.rand(3, 4).mul(8).tolist()])  # fmt: skip
    want = reference_dfl(bins.numpy().astype(np.float64), target.numpy())
    assert distribution_focal_loss(bins, target).item() == pytest.approx(want, rel=1e-5)
    # a distribution on the two bins around the target, split as the target, is the minimum
    best = torch.full((1, 4, 9), -30.0)
    best[0, :, 2], best[0, :, 3] = math.log(0.75), math.log(0.25)
    assert distribution_focal_loss(best, torch.full((1, 4), 2.25)) < distribution_focal_loss(best, torch.full((1, 4), 2.75))  # fmt: skip


@pytest.mark.parametrize("box_loss", ["diou", "ciou"])
def test_box_loss_options_follow_their_formulas(box_loss: str) -> None:
    """DIoU: 1 - IoU + d^2 / c^2; CIoU adds alpha * v, alpha = v / (1 - IoU + v) (Zheng et al.)."""
    det = head(box_weight=3.0, box_loss=box_loss).detector
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0]])
    strides = torch.full((4,), 8.0)
    logits = torch.zeros(1, 4, 3)
    boxes = torch.tensor([[[0.0, 1.0, 14.0, 9.0], [3.0, 0.0, 18.0, 12.0], [10.0, 0.0, 26.0, 6.0], [0.0, 2.0, 9.0, 20.0]]])  # fmt: skip
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 10.0]]), "labels": torch.tensor([2])}]
    fg = det.assign(logits, boxes, points, strides, targets).foreground[0]
    total = 0.0
    for i in fg.nonzero().flatten().tolist():
        iou, d, v = iou_terms(boxes[0, i].numpy(), targets[0]["boxes"][0].numpy())
        total += 1 - iou + d + (v * v / (1 - iou + v) if box_loss == "ciou" else 0.0)
    assert fg.sum() >= 2
    loss = det.loss(logits, boxes, points, strides, targets)["loss_box"].item()
    assert loss == pytest.approx(3.0 * total / int(fg.sum()), rel=1e-4)


def test_distance_bins_decode_to_their_expectation_and_add_the_dfl() -> None:
    """reg_max > 0: each side's distance is stride * sum_i i * softmax(bins)_i; training adds
    ``loss_dfl`` = dfl_weight * DFL(bins of the positives, target distances in strides) / positives."""
    h = head(reg_max=4, dfl_weight=0.5)
    det = h.detector
    torch.manual_seed(2)
    maps = [torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)]
    with torch.no_grad():
        logits, boxes, points, strides, bins = det.predict(maps)
    assert bins.shape == (1, 20, 4, 5)
    for n in (0, 5, 17, 19):  # a loop over points and sides
        dist = [float((bins[0, n, j].softmax(0) * torch.arange(5.0)).sum()) * float(strides[n]) for j in range(4)]  # fmt: skip
        want = [points[n, 0] - dist[0], points[n, 1] - dist[1], points[n, 0] + dist[2], points[n, 1] + dist[3]]  # fmt: skip
        torch.testing.assert_close(boxes[0, n], torch.tensor(want), atol=1e-5, rtol=0)
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([1])}]
    a = det.assign(logits, boxes, points, strides, targets)
    losses = det.loss(logits, boxes, points, strides, targets, a, bins)
    pos = a.foreground[0].nonzero().flatten().tolist()
    assert pos and set(losses) == {"loss_cls", "loss_box", "loss_dfl"}
    gt = targets[0]["boxes"][0]
    dist = torch.stack([torch.cat([points[i] - gt[:2], gt[2:] - points[i]]) / strides[i] for i in pos])  # fmt: skip
    want = reference_dfl(bins[0, pos].detach().double().numpy(), dist.numpy())
    assert losses["loss_dfl"].item() == pytest.approx(0.5 * want / len(pos), rel=1e-5)


def test_l1_term_equals_a_plain_loop() -> None:
    """l1_weight > 0 adds ``loss_l1`` = l1_weight * sum over positives of the mean over the 4 sides
    of |predicted - target distance| / stride, / positives; an empty batch gives 0."""
    det = head(l1_weight=0.5).detector
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0], [8.0, 8.0]])
    strides = torch.tensor([8.0, 8.0, 8.0, 8.0, 16.0])
    logits = torch.zeros(1, 5, 3)
    boxes = torch.tensor([[[0.0, 1.0, 14.0, 9.0], [3.0, 0.0, 18.0, 12.0], [10.0, 0.0, 26.0, 6.0], [0.0, 2.0, 9.0, 20.0], [1.0, 1.0, 15.0, 11.0]]])  # fmt: skip
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 10.0]]), "labels": torch.tensor([2])}]
    a = det.assign(logits, boxes, points, strides, targets)
    losses = det.loss(logits, boxes, points, strides, targets, a)
    pos = a.foreground[0].nonzero().flatten().tolist()
    assert len(pos) >= 2 and set(losses) == {"loss_cls", "loss_box", "loss_l1"}
    gt = targets[0]["boxes"][0].tolist()
    total = 0.0
    for i in pos:
        (px, py), b, s = points[i].tolist(), boxes[0, i].tolist(), float(strides[i])
        pred = [px - b[0], py - b[1], b[2] - px, b[3] - py]
        want = [px - gt[0], py - gt[1], gt[2] - px, gt[3] - py]
        total += sum(abs(p - w) / s for p, w in zip(pred, want, strict=True)) / 4
    assert losses["loss_l1"].item() == pytest.approx(0.5 * total / len(pos), rel=1e-5)
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    assert det.loss(logits, boxes, points, strides, empty)["loss_l1"].item() == 0.0
    assert "loss_l1" not in head().detector.loss(logits, boxes, points, strides, targets)


def test_input_scale_multiplies_the_transform_sizes() -> None:
    """input_scale resizes relative to min_size / max_size (the data's size): 64 * 1.125 = 72."""
    t = head(input_scale=1.125).detector.transform
    assert t.min_size == (72,) and t.max_size == 72
    t = head(min_size=64, max_size=None, input_scale=1.25).detector.transform
    assert t.min_size == (80,) and t.max_size == round(round(64 * 1333 / 800) * 1.25)
    assert head().detector.transform.min_size == (64,)


def test_losses_are_normalised_by_the_rank_averaged_positive_count(monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Under DDP the positive count is averaged over ranks (all_reduce / world size, at least 1):
    with every other rank's count twice this one's, the mean is 1.5x it and the losses 1/1.5x."""
    import visionkit.models.heads.rtdet as rtdet

    det = head().detector
    torch.manual_seed(1)
    points = torch.tensor([[4.0, 4.0], [12.0, 4.0], [20.0, 4.0], [4.0, 12.0]])
    strides = torch.full((4,), 8.0)
    logits, boxes = torch.randn(1, 4, 3), torch.cat([points - 6, points + 6], -1)[None]
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 16.0, 10.0]]), "labels": torch.tensor([2])}]
    alone = det.loss(logits, boxes, points, strides, targets)
    count = det.assign(logits, boxes, points, strides, targets).foreground.sum().item()
    seen = []
    monkeypatch.setattr(rtdet, "mean_over_ranks", lambda v: seen.append(v.item()) or (v + 2 * v) / 2)  # fmt: skip
    averaged = det.loss(logits, boxes, points, strides, targets)
    assert seen == [count] and count > 0
    for key in alone:
        assert averaged[key].item() == pytest.approx(alone[key].item() / 1.5, rel=1e-5)
    monkeypatch.setattr(rtdet, "mean_over_ranks", lambda v: v * 0)  # no positives anywhere
    assert det.assign(logits, boxes, points, strides, targets).num_pos.item() == 1.0


def reference_postprocess(det, logits, boxes, sizes, originals) -> list[dict]:
    """One image at a time, with torchvision's batched_nms per image (class groups); with
    ``det.merge_boxes`` each kept box averaged, loop by loop, over the candidates of its class
    overlapping it by more than nms_thresh, weighted by score."""
    out = []
    for i in range(len(logits)):
        scores = logits[i].sigmoid().flatten()
        top, index = scores.topk(min(det.pre_nms_top_n, len(scores)))
        keep = top > det.score_thresh
        top, index = top[keep], index[keep]
        point, labels = index // logits.shape[-1], index % logits.shape[-1]
        h, w = sizes[i].tolist()
        bx = boxes[i, point].clone()
        bx[:, 0::2] = bx[:, 0::2].clamp(0, w)
        bx[:, 1::2] = bx[:, 1::2].clamp(0, h)
        bx = bx * (originals[i] / sizes[i]).flip(0).repeat(2)
        kept = batched_nms(bx, top, labels, det.nms_thresh)[: det.detections_per_img]
        merged = bx[kept].clone()
        for row, j in enumerate(kept.tolist()) if det.merge_boxes else ():
            total, weights = torch.zeros(4), 0.0
            for c in range(len(bx)):
                # itself included (also a box clipped to zero area, whose IoU is undefined)
                if c == j or (labels[c] == labels[j] and box_iou(bx[c, None], bx[j, None]).item() > det.nms_thresh):  # fmt: skip
                    total, weights = total + top[c] * bx[c], weights + top[c].item()
            merged[row] = total / weights
        out.append({"boxes": merged, "labels": labels[kept], "scores": top[kept]})
    return out


@pytest.mark.parametrize("merge", [False, True])
def test_batched_postprocess_equals_a_per_image_loop(merge: bool) -> None:
    det = head(score_thresh=0.3, nms_thresh=0.5, pre_nms_top_n=40, detections_per_img=7, merge_boxes=merge).detector  # fmt: skip
    torch.manual_seed(2)
    b, n, k = 4, 30, 3
    logits = torch.randn(b, n, k) * 2
    logits[3] = -10.0  # an image without detections
    xy = torch.rand(b, n, 2) * 48
    boxes = torch.cat([xy - 4, xy + torch.rand(b, n, 2) * 24 + 2], -1)
    sizes = torch.tensor([[64.0, 64.0], [64.0, 48.0], [32.0, 64.0], [64.0, 64.0]])
    originals = torch.tensor([[128.0, 128.0], [64.0, 48.0], [40.0, 100.0], [64.0, 64.0]])
    got = det.postprocess(logits, boxes, sizes, originals)
    want = reference_postprocess(det, logits, boxes, sizes, originals)
    assert [len(g["boxes"]) for g in got] == [len(w["boxes"]) for w in want]
    assert len(want[0]["boxes"]) == 7 and len(want[3]["boxes"]) == 0
    plain = reference_postprocess(head(score_thresh=0.3, nms_thresh=0.5, pre_nms_top_n=40, detections_per_img=7).detector, logits, boxes, sizes, originals)  # fmt: skip
    moved = [not torch.allclose(w["boxes"], p["boxes"]) for w, p in zip(want, plain, strict=True)]
    assert any(moved) == merge  # merging moves some boxes (the case has overlapping candidates)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g["boxes"], w["boxes"])
        torch.testing.assert_close(g["scores"], w["scores"])
        assert g["labels"].tolist() == w["labels"].tolist() and g["labels"].dtype == torch.int64


def test_grouped_nms_equals_one_nms_per_group() -> None:
    # 3,000 boxes in 96 groups (16 images x 6 classes): above the 1,000 boxes at which
    # torchvision's batched_nms loops over the groups on CPU; the oracle is that plain loop
    torch.manual_seed(4)
    n = 3000
    xy = torch.rand(n, 2) * 100
    boxes = torch.cat([xy, xy + torch.rand(n, 2) * 30 + 1], -1)
    scores, groups = torch.rand(n), torch.randint(0, 96, (n,))
    want = []
    for g in groups.unique().tolist():
        idx = (groups == g).nonzero().flatten()
        want += idx[nms(boxes[idx], scores[idx], 0.5)].tolist()
    got = grouped_nms(boxes, scores, groups, 0.5)
    assert sorted(got.tolist()) == sorted(want) and len(want) < n
    assert scores[got].diff().le(0).all()  # by decreasing score
    assert grouped_nms(boxes[:0], scores[:0], groups[:0], 0.5).tolist() == []


@pytest.mark.parametrize("shapes", [[(3, 64, 64)] * 2, [(3, 40, 64), (3, 64, 50), (3, 33, 33)]])
def test_transform_equals_torchvision(shapes: list[tuple[int, int, int]]) -> None:
    torch.manual_seed(3)
    images = [torch.rand(s) for s in shapes]
    ours = ImageTransform(48, 80, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25], 16)
    tv = GeneralizedRCNNTransform(48, 80, [0.4, 0.5, 0.6], [0.2, 0.3, 0.25], size_divisible=16)
    x, sizes, originals = ours(images)
    ref, _ = tv(images)
    assert sizes.tolist() == [list(s) for s in ref.image_sizes]
    assert originals.tolist() == [list(s[1:]) for s in shapes]
    assert x.shape == ref.tensors.shape
    torch.testing.assert_close(x, ref.tensors, atol=1e-5, rtol=0)


def test_levels_share_the_branch_convolutions_but_not_their_norms() -> None:
    # one norm per level: a norm shared by the levels kept one running average of all of them,
    # which biased a trained model's boxes at inference (visionkit.layers.level_shared)
    det = head(norm="bn").detector
    for branch in (det.cls_convs, det.reg_convs):
        assert len(branch) == len(LEVELS)
        assert branch[1][0].conv.weight is branch[0][0].conv.weight
        assert branch[1][0].norm is not branch[0][0].norm
    det.train()
    maps = [torch.randn(2, 8, 8, 8), torch.randn(2, 8, 4, 4) * 3 + 2]
    det.predict(maps)
    means = [branch[0].norm.running_mean for branch in det.cls_convs]
    assert not torch.allclose(means[0], means[1])


def test_outputs_in_training_and_evaluation() -> None:
    h = head(score_thresh=0.0, detections_per_img=5)
    conv = torch.nn.Conv2d(3, 8, 1)

    def features(x: torch.Tensor) -> list[torch.Tensor]:
        return [conv(x[..., ::8, ::8]), conv(x[..., ::16, ::16])]

    images = [torch.rand(3, 48, 64), torch.rand(3, 64, 40)]
    targets = [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]  # fmt: skip
    losses = h.train()(images, targets, features)
    assert set(losses) == {"loss_cls", "loss_box"} and all(torch.isfinite(v) for v in losses.values())  # fmt: skip
    sum(losses.values()).backward()
    assert conv.weight.grad.abs().sum() > 0
    empty = h(images, [targets[1], targets[1]], features)  # no objects in the batch
    assert empty["loss_box"] == 0 and torch.isfinite(empty["loss_cls"])
    h.eval()
    with torch.no_grad():
        out = h(images, None, features)
    for o, im in zip(out, images, strict=True):
        assert o["boxes"].shape == (5, 4) and o["labels"].shape == o["scores"].shape == (5,)
        assert o["labels"].max() < 3 and (o["boxes"][:, 2:] <= o["boxes"].new_tensor(im.shape[-2:]).flip(0)).all()  # fmt: skip
    h.detector.score_thresh = 1.0
    with torch.no_grad():
        assert all(len(o["boxes"]) == 0 for o in h(images, None, features))


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="equal channels"):
        HEADS.build({"name": "rtdet"}, [FeatureInfo(8, 8), FeatureInfo(16, 16)], 3)
    with pytest.raises(ConfigError, match="prior_prob"):
        head(prior_prob=1.5)
    with pytest.raises(ConfigError, match=r"model\.head\.min_size"):
        head(min_size=64, max_size=32)
    with pytest.raises(ConfigError, match=r"box_loss must be one of \['ciou', 'diou', 'giou'\]"):
        head(box_loss="iou")
    with pytest.raises(ConfigError, match=r"model\.head\.reg_max >= 0"):
        head(reg_max=-1)
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['topks'\].*Did you mean topk\?"):
        head(topks=3)
    for key, value in (
        ("dfl_weight", -0.25),
        ("box_weight", -1.0),
        ("l1_weight", float("nan")),
        ("l1_weight", "1"),
    ):
        with pytest.raises(ConfigError, match=rf"model\.head\.{key} must be a finite number >= 0, got"):  # fmt: skip
            head(**{key: value})
    for value in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=r"model\.head\.input_scale must be a finite number > 0"):  # fmt: skip
            head(input_scale=value)
    assert math.isclose(head().detector.cls_pred.bias[0].item(), -math.log(99), rel_tol=1e-6)
