"""``rtdet``: a real-time one-stage anchor-free detector head (in the spirit of YOLOX / RTMDet /
PP-YOLOE), built for batches: every step is a tensor operation over the whole batch.

* decoupled head: per level ``num_convs`` 3x3 convs for classes and as many for boxes (their
  convolutions shared across levels, their BatchNorms per level, as RTMDet's); one point per
  location predicts K class logits and the distances (left, top, right, bottom) to the box
  edges, ``exp(.) * stride``, or (``reg_max`` > 0, GFL / YOLOv8) each distance as a softmax
  over ``reg_max + 1`` bins of one stride, its expectation;
* task-aligned assignment (TOOD): for each ground-truth box, the ``topk`` candidate points (centre
  inside the box or within ``center_radius`` strides of its centre) with the largest
  ``score ** alpha * iou ** beta``; a point claimed by several boxes keeps the one it overlaps most;
* IoU-aware classification: varifocal loss whose positive target is the IoU of the predicted box
  with its assigned box; GIoU (or DIoU / CIoU) box loss, and with bins the distribution focal loss
  (DFL) on the two bins around each target distance, and optionally (``l1_weight``) an L1 loss on
  the distances in strides (YOLOX); all normalised by the number of positives;
* post-processing: one score threshold and top-k over the batch, one ``grouped_nms`` for the whole
  batch (image x class groups), ``detections_per_img`` by rank; no per-image Python loop. With
  ``merge_boxes`` (weighted NMS, as YOLOv5's ``merge``) each kept box becomes the score-weighted
  mean of the candidates of its image and class that overlap it by more than ``nms_thresh``.

The head contract is the detectors' (:mod:`visionkit.models.heads.detector_base`): images are a
list of float [3,H,W] in 0..1 that the head normalises and resizes (``min_size``/``max_size``, as
torchvision's detectors); labels are 0..K-1 (no background index).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import (
    batched_nms,
    complete_box_iou_loss,
    distance_box_iou_loss,
    generalized_box_iou_loss,
    nms,
)

from visionkit.distributed import mean_over_ranks
from visionkit.errors import ConfigError
from visionkit.layers.blocks import ConvNormAct
from visionkit.layers.level_shared import LevelShared
from visionkit.layers.roi_align import exporting
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    DetectorOptions,
    common_channels,
    image_transform_options,
    reject_unknown_options,
)

Target = dict[str, torch.Tensor]
FeatureFn = Callable[[torch.Tensor], list[torch.Tensor]]
MAX_EXP = math.log(1000.0)  # distances at most 1000 strides: keeps exp finite early in training
BOX_LOSSES = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}  # fmt: skip


# -- batched image transform ---------------------------------------------------------------------
class ImageTransform(nn.Module):
    """Normalise and resize like torchvision's detector transform (shorter side ``min_size``,
    longer at most ``max_size``), batched: images of one size are resized in one call.

    Attributes ``min_size`` (tuple), ``max_size``, ``image_mean``, ``image_std`` and ``resize`` are
    named as torchvision's, which the export reads and replaces (:class:`visionkit.export.DetectorModel`).
    """

    def __init__(self, min_size: int, max_size: int, image_mean: Sequence[float], image_std: Sequence[float], size_divisible: int) -> None:  # fmt: skip
        super().__init__()
        self.min_size = (int(min_size),)
        self.max_size = int(max_size)
        self.image_mean, self.image_std = list(image_mean), list(image_std)
        self.size_divisible = int(size_divisible)

    def scale(self, height: int, width: int) -> float:
        return min(self.min_size[-1] / min(height, width), self.max_size / max(height, width))

    def resize(self, image: torch.Tensor, target: Any = None) -> tuple[torch.Tensor, Any]:
        """One image [C,H,W] (or a batch [B,C,H,W] of one size) resized as torchvision does."""
        scale = self.scale(*image.shape[-2:])
        if scale == 1.0:
            return image, target
        batch = image if image.dim() == 4 else image[None]
        out = F.interpolate(batch, scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False)  # fmt: skip
        return (out if image.dim() == 4 else out[0]), target

    def forward(
        self, images: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (batch [B,3,H,W] normalised, resized and padded; per image [h, w] after resizing
        and before, float). Sizes are read with ``_shape_as_tensor``: dynamic in an ONNX graph."""
        mean = images[0].new_tensor(self.image_mean)[:, None, None]
        std = images[0].new_tensor(self.image_std)[:, None, None]
        if len({tuple(im.shape) for im in images}) == 1:  # the common case: one resize per batch
            x, _ = self.resize((torch.stack(images) - mean) / std)
            n = len(images)
            sizes = _hw(x).expand(n, 2)
            originals = _hw(images[0]).expand(n, 2)
        else:
            resized = [self.resize((im - mean) / std)[0] for im in images]
            sizes = torch.stack([_hw(im) for im in resized])
            originals = torch.stack([_hw(im) for im in images])
            h, w = (max(im.shape[i] for im in resized) for i in (-2, -1))
            x = resized[0].new_zeros(len(resized), resized[0].shape[0], h, w)
            for i, im in enumerate(resized):
                x[i, :, : im.shape[-2], : im.shape[-1]] = im
        if self.size_divisible > 1:  # (not needed by 'same'-padded strided convs: default 1)
            d = self.size_divisible
            x = F.pad(x, (0, (-x.shape[-1]) % d, 0, (-x.shape[-2]) % d))
        return x, sizes.to(x.device), originals.to(x.device)


def _hw(image: torch.Tensor) -> torch.Tensor:
    """[h, w] of an image (or batch) as a float tensor, traced as a shape in exported graphs."""
    return torch._shape_as_tensor(image)[-2:].float()


# -- points, boxes, assignment, losses -----------------------------------------------------------
def level_points(maps: Sequence[torch.Tensor], strides: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Cell centres (x, y) in input pixels of every location of every level, [N,2], and their
    strides [N], in the order the head flattens its outputs (level by level, row-major)."""
    points, per_point = [], []
    for m, s in zip(maps, strides, strict=True):
        h, w = m.shape[-2:]
        ys = (torch.arange(h, device=m.device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=m.device, dtype=torch.float32) + 0.5) * s
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1))
        per_point.append(torch.full_like(xx.reshape(-1), float(s)))
    return torch.cat(points), torch.cat(per_point)


def decode_boxes(points: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
    """(left, top, right, bottom) distances [..., N, 4] from points [N,2] -> xyxy boxes."""
    return torch.cat([points - distances[..., :2], points + distances[..., 2:]], dim=-1)


def pad_targets(targets: Sequence[Target], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Ground truth of a batch padded to its largest count: boxes [B,G,4], labels [B,G], valid [B,G]."""
    g = max((len(t["boxes"]) for t in targets), default=0)
    boxes = torch.zeros(len(targets), g, 4, device=device)
    labels = torch.zeros(len(targets), g, dtype=torch.long, device=device)
    valid = torch.zeros(len(targets), g, dtype=torch.bool, device=device)
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        boxes[i, :n] = t["boxes"].to(device, torch.float32)
        labels[i, :n] = t["labels"].to(device)
        valid[i, :n] = True
    return boxes, labels, valid


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of boxes a [B,G,4] with b [B,N,4] -> [B,G,N] (batched torchvision ``box_iou``)."""
    lt = torch.maximum(a[:, :, None, :2], b[:, None, :, :2])
    rb = torch.minimum(a[:, :, None, 2:], b[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, :, None] + area_b[:, None, :] - inter + eps)


def elementwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-9) -> torch.Tensor:
    """IoU of matching rows of a [..., 4] and b [..., 4]."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1) + (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)  # fmt: skip
    return inter / (area - inter + eps)


class TaskAlignedAssigner(nn.Module):
    """Task-aligned label assignment (TOOD, PP-YOLOE), batched over images and ground truths.

    For each ground-truth box: candidates are points whose centre lies inside it or within
    ``center_radius`` strides of its centre; the ``topk`` candidates with the largest alignment
    ``s ** alpha * iou ** beta`` (s: predicted score of the box's class, iou: of the predicted
    box) become positives. A point positive for several boxes keeps the one with the largest IoU.
    """

    def __init__(self, topk: int = 10, alpha: float = 1.0, beta: float = 6.0, center_radius: float = 2.5) -> None:  # fmt: skip
        super().__init__()
        self.topk, self.alpha, self.beta, self.center_radius = int(topk), float(alpha), float(beta), float(center_radius)  # fmt: skip

    @torch.no_grad()
    def forward(
        self,
        scores: torch.Tensor,
        boxes: torch.Tensor,
        points: torch.Tensor,
        strides: torch.Tensor,
        gt_boxes: torch.Tensor,
        gt_labels: torch.Tensor,
        gt_valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """scores [B,N,K] (probabilities), boxes [B,N,4] predicted, points [N,2], strides [N],
        ground truth [B,G,...] -> (foreground [B,N] bool, assigned box index [B,N] in 0..G-1)."""
        b, n = scores.shape[:2]
        g = gt_boxes.shape[1]
        if g == 0:
            return scores.new_zeros(b, n, dtype=torch.bool), scores.new_zeros(b, n, dtype=torch.long)  # fmt: skip
        px, py = points[:, 0], points[:, 1]  # [N]
        x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # [B,G,1]
        inside = (px > x1) & (px < x2) & (py > y1) & (py < y2)
        r = self.center_radius * strides
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        near = ((px - cx).abs() < r) & ((py - cy).abs() < r)
        candidate = (inside | near) & gt_valid[..., None]  # [B,G,N]
        ious = pairwise_iou(gt_boxes, boxes)  # [B,G,N]
        cls = scores.gather(2, gt_labels[:, None, :].expand(b, n, g)).transpose(1, 2)  # [B,G,N]
        align = cls.pow(self.alpha) * ious.pow(self.beta) * candidate
        k = min(self.topk, n)
        top = align.topk(k, dim=2).indices  # [B,G,k]
        chosen = torch.zeros_like(candidate).scatter_(2, top, True) & candidate
        # several boxes claim a point: the one it overlaps most keeps it
        overlap = torch.where(chosen, ious, torch.full_like(ious, -1.0))
        best = overlap.argmax(dim=1)  # [B,N]
        foreground = chosen.any(dim=1)
        return foreground, best


class Assignment(NamedTuple):
    """What :meth:`RTDetector.assign` found: ``foreground`` [B,N] bool, ``index`` [B,N] (assigned
    box), the padded ground truth (:func:`pad_targets`) and ``num_pos`` (the loss normaliser)."""

    foreground: torch.Tensor
    index: torch.Tensor
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor
    gt_valid: torch.Tensor
    num_pos: torch.Tensor


def varifocal_loss(logits: torch.Tensor, quality: torch.Tensor, alpha: float = 0.75, gamma: float = 2.0) -> torch.Tensor:  # fmt: skip
    """Varifocal loss (VarifocalNet), summed: BCE against ``quality`` (IoU on the positive class,
    0 elsewhere), positives weighted by their quality, negatives by ``alpha * p ** gamma``."""
    p = logits.sigmoid()
    weight = torch.where(quality > 0, quality, alpha * p.detach().pow(gamma))
    return (F.binary_cross_entropy_with_logits(logits, quality, reduction="none") * weight).sum()


def box_distances(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Distances (left, top, right, bottom) from points [..., 2] to the edges of boxes [..., 4]
    (the inverse of :func:`decode_boxes`)."""
    return torch.cat([points - boxes[..., :2], boxes[..., 2:] - points], dim=-1)


def distribution_focal_loss(bins: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss (GFL, Li et al. 2020), summed over rows: bins [P,4,R+1] (logits of
    each side's distance over bins 0..R), target [P,4] in bin units, clamped into [0, R - 0.01];
    cross-entropy on the two bins around the target, weighted by closeness, averaged over sides."""
    r = bins.shape[-1] - 1
    t = target.clamp(min=0.0, max=r - 0.01)
    left = t.floor().long()
    w_right = t - left
    logp = bins.float().log_softmax(-1)
    ce_left = -logp.gather(-1, left[..., None])[..., 0]
    ce_right = -logp.gather(-1, (left + 1)[..., None])[..., 0]
    return (ce_left * (1 - w_right) + ce_right * w_right).mean(-1).sum()


def distance_l1_loss(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 loss on the box edges' distances (YOLOX's extra L1 term), summed over rows: predicted
    and target distances [P,4] in strides, the absolute difference averaged over the 4 sides. Unlike
    an IoU loss its gradient does not shrink as the overlap grows, which sharpens high-IoU boxes."""
    return (dist - target).abs().mean(-1).sum()


class Prediction(NamedTuple):
    """What :meth:`RTDetector.predict` gives: class logits [B,N,K], boxes [B,N,4] (xyxy, input
    pixels), points [N,2], their strides [N], and the distance bins' logits [B,N,4,R+1] (None
    without bins, ``reg_max`` 0)."""

    logits: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    strides: torch.Tensor
    bins: torch.Tensor | None


# -- the head ------------------------------------------------------------------------------------
class RTDetector(nn.Module):
    """The detector proper (``RTDetHead.detector``): transform, decoupled convs, assignment,
    losses and batched post-processing."""

    def __init__(
        self,
        channels: int,
        strides: Sequence[int],
        num_classes: int,
        num_convs: int,
        norm: Any,
        act: Any,
        transform: ImageTransform,
        assigner: TaskAlignedAssigner,
        box_weight: float,
        score_thresh: float,
        nms_thresh: float,
        pre_nms_top_n: int,
        detections_per_img: int,
        prior_prob: float,
        box_loss: str,
        reg_max: int,
        dfl_weight: float,
        merge_boxes: bool,
        l1_weight: float,
    ) -> None:
        super().__init__()
        self.transform = transform
        self.assigner = assigner
        self.strides = [int(s) for s in strides]
        self.num_classes = int(num_classes)

        def branch() -> nn.Sequential:
            return nn.Sequential(*[ConvNormAct(channels, channels, 3, norm=norm, act=act) for _ in range(num_convs)])  # fmt: skip

        # convolutions shared by the levels, norms per level (see visionkit.layers.level_shared)
        self.cls_convs = LevelShared(branch, len(self.strides))
        self.reg_convs = LevelShared(branch, len(self.strides))
        self.cls_pred = nn.Conv2d(channels, self.num_classes, 1)
        self.reg_max = int(reg_max)
        self.reg_pred = nn.Conv2d(channels, 4 * (self.reg_max + 1), 1)
        self.register_buffer("bin_values", torch.arange(self.reg_max + 1, dtype=torch.float32), persistent=False)  # fmt: skip
        nn.init.constant_(self.cls_pred.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.normal_(self.cls_pred.weight, std=0.01)
        nn.init.normal_(self.reg_pred.weight, std=0.01)
        nn.init.zeros_(self.reg_pred.bias)
        self.box_weight, self.dfl_weight, self.l1_weight = float(box_weight), float(dfl_weight), float(l1_weight)  # fmt: skip
        self.box_loss = BOX_LOSSES[box_loss]
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.pre_nms_top_n, self.detections_per_img = int(pre_nms_top_n), int(detections_per_img)
        self.merge_boxes = bool(merge_boxes)

    def predict(self, maps: list[torch.Tensor]) -> Prediction:
        """Feature maps -> :class:`Prediction` (class logits, boxes, points, strides, bins)."""
        logits, dists, bins = [], [], []
        for level, (m, s) in enumerate(zip(maps, self.strides, strict=True)):
            c = self.cls_pred(self.cls_convs(m, level))
            r = self.reg_pred(self.reg_convs(m, level))
            logits.append(c.flatten(2))
            if self.reg_max:  # [B, 4*(R+1), H, W] -> bins [B, 4, R+1, HW]; expectation in strides
                b = r.reshape(r.shape[0], 4, self.reg_max + 1, -1)
                bins.append(b)
                dists.append((b.softmax(2) * self.bin_values[:, None]).sum(2) * s)
            else:
                dists.append(r.clamp(max=MAX_EXP).exp().flatten(2) * s)
        points, strides = level_points(maps, self.strides)
        logits_t = torch.cat(logits, dim=2).transpose(1, 2)
        boxes = decode_boxes(points, torch.cat(dists, dim=2).transpose(1, 2))
        bins_t = torch.cat(bins, dim=3).permute(0, 3, 1, 2) if bins else None  # [B,N,4,R+1]
        return Prediction(logits_t, boxes, points, strides, bins_t)

    def forward(self, images: list[torch.Tensor], targets: list[Target] | None, features: FeatureFn) -> Any:  # fmt: skip
        x, sizes, originals = self.transform(images)
        maps = features(x)
        if len(maps) != len(self.strides):
            raise ConfigError(
                f"rtdet: built for {len(self.strides)} feature levels, got {len(maps)}"
            )
        logits, boxes, points, strides, bins = self.predict(maps)
        if targets is not None:
            ratio = (sizes / originals).flip(1).repeat(1, 2)  # [B,4]: x, y, x, y
            scaled = [{"boxes": t["boxes"] * ratio[i], "labels": t["labels"]} for i, t in enumerate(targets)]  # fmt: skip
            return self.loss(logits, boxes, points, strides, scaled, bins=bins)
        return self.postprocess(logits, boxes, sizes, originals)

    def assign(self, logits: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, targets: list[Target]) -> Assignment:  # fmt: skip
        """The task-aligned assignment of a batch and the positive count that normalises the
        losses: averaged over DDP ranks (as YOLOX / RTMDet), so every rank's gradient has the same
        scale; at least 1."""
        gt_boxes, gt_labels, gt_valid = pad_targets(targets, logits.device)
        fg, idx = self.assigner(logits.detach().sigmoid(), boxes.detach(), points, strides, gt_boxes, gt_labels, gt_valid)  # fmt: skip
        num_pos = mean_over_ranks(fg.sum().float()).clamp(min=1.0)
        return Assignment(fg, idx, gt_boxes, gt_labels, gt_valid, num_pos)

    def loss(self, logits: torch.Tensor, boxes: torch.Tensor, points: torch.Tensor, strides: torch.Tensor, targets: list[Target], assignment: Assignment | None = None, bins: torch.Tensor | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
        """Task-aligned assignment (``assignment``: one made already by :meth:`assign`),
        varifocal classification loss, IoU-based box loss and (``bins`` given) the DFL."""
        if assignment is None:
            assignment = self.assign(logits, boxes, points, strides, targets)
        fg, idx, gt_boxes, gt_labels, _, num_pos = assignment
        quality = torch.zeros_like(logits)
        if gt_boxes.shape[1] == 0 or not bool(fg.any()):
            empty = {"loss_cls": varifocal_loss(logits, quality) / num_pos, "loss_box": boxes.sum() * 0.0}  # fmt: skip
            if self.l1_weight:
                empty["loss_l1"] = boxes.sum() * 0.0
            return empty if bins is None else {**empty, "loss_dfl": bins.sum() * 0.0}
        b = torch.arange(len(targets), device=logits.device)[:, None].expand_as(idx)
        matched = gt_boxes[b[fg], idx[fg]]  # [P,4]
        labels = gt_labels[b[fg], idx[fg]]
        pred = boxes[fg]
        iou = elementwise_iou(pred.detach(), matched).clamp(min=1e-6)
        quality[fg] = F.one_hot(labels, self.num_classes).to(quality.dtype) * iou[:, None]
        loss_cls = varifocal_loss(logits, quality) / num_pos
        loss_box = self.box_loss(pred, matched, reduction="sum") / num_pos
        losses = {"loss_cls": loss_cls, "loss_box": self.box_weight * loss_box}
        if bins is not None or self.l1_weight:
            point = fg.nonzero()[:, 1]
            target = box_distances(points[point], matched) / strides[point, None]
        if bins is not None:
            losses["loss_dfl"] = self.dfl_weight * distribution_focal_loss(bins[fg], target) / num_pos  # fmt: skip
        if self.l1_weight:
            dist = box_distances(points[point], pred) / strides[point, None]
            losses["loss_l1"] = self.l1_weight * distance_l1_loss(dist, target) / num_pos
        return losses

    def postprocess(self, logits: torch.Tensor, boxes: torch.Tensor, sizes: torch.Tensor, originals: torch.Tensor) -> list[Target]:  # fmt: skip
        """Batched: top-k over (point, class) per image, one ``grouped_nms`` over the batch, the
        best ``detections_per_img`` per image; boxes clipped, back in the original images' pixels."""
        sel = select_detections(self, logits, boxes, sizes, originals)
        return sel.per_image({"boxes": sel.boxes, "labels": sel.labels, "scores": sel.scores})


TRANSFORM_OPTIONS = ("size_divisible",)  # keywords of the image transform the head passes on


def check_options(options: dict[str, Any]) -> None:
    """Like the torchvision detector heads: an unknown ``model.head`` key is an error with a hint."""
    names = [*inspect.signature(RTDetHead.__init__).parameters, *TRANSFORM_OPTIONS]
    reject_unknown_options("rtdet", options, TRANSFORM_OPTIONS, names)


class RTDetHead(nn.Module):
    """``rtdet`` (HEADS): the real-time detector on the task's features; reads the levels'
    channels (equal: use a neck, ``pafpn``) and strides from ``feature_info``.

    ``num_convs`` 3x3 convs per branch; ``topk``/``alpha``/``beta``/``center_radius``: assigner;
    ``box_loss`` (giou | diou | ciou) and its weight ``box_weight``; ``reg_max``: 0 for ``exp``
    distances, else bins 0..reg_max (strides) per side with the DFL weighted ``dfl_weight``;
    ``l1_weight``: an L1 loss on the edges' distances in strides (YOLOX; 0: none);
    ``score_thresh``, ``nms_thresh``, ``pre_nms_top_n``, ``detections_per_img``, ``merge_boxes``
    (weighted NMS): post-processing; ``min_size``/``max_size``, ``image_mean``/``image_std``: the
    image transform, as torchvision's detectors, both times ``input_scale`` (relative to the
    data's image size: 1.125 detects 64 px images at 72 px) (and ``size_divisible``: pad batches to a
    multiple of it; default 1, as strided 'same' convolutions and the necks take any size).
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        num_convs: int = 2,
        norm: Any = "bn",
        act: Any = "swish",
        topk: int = 10,
        alpha: float = 1.0,
        beta: float = 6.0,
        center_radius: float = 2.5,
        box_weight: float = 2.0,
        prior_prob: float = 0.01,
        nms_thresh: float = 0.6,
        pre_nms_top_n: int = 1000,
        box_loss: str = "giou",
        reg_max: int = 0,
        dfl_weight: float = 0.25,
        merge_boxes: bool = False,
        l1_weight: float = 0.0,
        input_scale: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__()
        common = DetectorOptions.pop(options, min_size=640)  # shared keys, rtdet's own default size
        check_options(options)
        channels = common_channels(feature_info, "rtdet")
        if num_convs < 0 or topk < 1 or not 0 < prior_prob < 1:
            raise ConfigError(f"rtdet: num_convs >= 0, topk >= 1 and 0 < prior_prob < 1 needed, got {num_convs}, {topk}, {prior_prob} (config keys model.head.*)")  # fmt: skip
        if box_loss not in BOX_LOSSES or reg_max < 0:
            raise ConfigError(f"rtdet: model.head.box_loss must be one of {sorted(BOX_LOSSES)} and model.head.reg_max >= 0, got {box_loss!r}, {reg_max}")  # fmt: skip
        for key, value in (("box_weight", box_weight), ("dfl_weight", dfl_weight), ("l1_weight", l1_weight), ("input_scale", input_scale)):  # fmt: skip
            number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)  # fmt: skip
            if not number or value < 0 or (key == "input_scale" and value == 0):
                raise ConfigError(f"rtdet: model.head.{key} must be a finite number {'>' if key == 'input_scale' else '>='} 0, got {value!r}")  # fmt: skip
        strides = [f.reduction for f in feature_info]
        sizes = image_transform_options(common.min_size, common.max_size, common.image_mean, common.image_std)  # fmt: skip
        # input_scale: the detector's input relative to min_size / max_size (the data's image size
        # by default), e.g. 1.125 upsamples 64 px images to 72 px: finer boxes for small objects
        sizes["min_size"] = max(1, round(sizes["min_size"] * input_scale))
        sizes["max_size"] = max(sizes["min_size"], round(sizes["max_size"] * input_scale))
        divisible = int(options.get("size_divisible", 1))
        transform = ImageTransform(sizes["min_size"], sizes["max_size"], common.image_mean, common.image_std, divisible)  # fmt: skip
        assigner = TaskAlignedAssigner(topk, alpha, beta, center_radius)
        self.detector = RTDetector(
            channels, strides, num_classes, num_convs, norm, act, transform, assigner, box_weight,
            common.score_thresh, nms_thresh, pre_nms_top_n, common.detections_per_img, prior_prob,
            box_loss, reg_max, dfl_weight, merge_boxes, l1_weight,
        )  # fmt: skip

    def forward(self, images: list[torch.Tensor], targets: list[Target] | None, features: FeatureFn) -> Any:  # fmt: skip
        """Training (targets given): {"loss_cls", "loss_box"} (and "loss_dfl" with bins, "loss_l1"
        with l1_weight > 0); else per
        image boxes (xyxy, input pixels), labels (0..K-1), scores."""
        return self.detector(images, targets, features)


class Selected(NamedTuple):
    """Detections of a batch chosen by :func:`select_detections`, image by image (each by
    decreasing score): boxes in the original images' pixels and, clipped, in the detector's input
    pixels; scores, labels, the image and the point (of [B,N]) of each; ``counts`` per image."""

    boxes: torch.Tensor
    input_boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    image: torch.Tensor
    point: torch.Tensor
    counts: list[int]

    def per_image(self, fields: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """``fields`` (one row per detection) split into one dict per image."""
        if self.counts == [-1]:  # one image: the counts are not read from the graph's values
            return [dict(fields)]
        parts = zip(*(v.split(self.counts) for v in fields.values()), strict=True)
        return [dict(zip(fields, part, strict=True)) for part in parts]


def select_detections(det: RTDetector, logits: torch.Tensor, boxes: torch.Tensor, sizes: torch.Tensor, originals: torch.Tensor) -> Selected:  # fmt: skip
    """:meth:`RTDetector.postprocess`'s selection (top-k per image, one ``grouped_nms`` for the
    batch, ``detections_per_img`` by rank), which also says which point each detection came from
    (the instance-segmentation variant reads its mask coefficients there). With one image (the
    exported graph's path) ``counts`` is ``[-1]``: not read from the graph's values. With
    ``det.merge_boxes`` each chosen box is then the score-weighted mean of the candidates of its
    image and class overlapping it by more than ``nms_thresh`` (itself included)."""
    from torchvision.models.detection._utils import _topk_min

    bsz, _, k = logits.shape
    flat = logits.sigmoid().flatten(1)  # [B, N*K]
    scores, index = flat.topk(_topk_min(flat, det.pre_nms_top_n, 1), dim=1)
    point, labels = index // k, index % k
    cand = boxes.gather(1, point[..., None].expand(-1, -1, 4))  # [B,top,4]
    h, w = sizes[:, 0, None], sizes[:, 1, None]
    cand = torch.stack([cand[..., 0].clamp(min=0).minimum(w), cand[..., 1].clamp(min=0).minimum(h), cand[..., 2].clamp(min=0).minimum(w), cand[..., 3].clamp(min=0).minimum(h)], dim=-1)  # fmt: skip
    scaled = cand * (originals / sizes).flip(1).repeat(1, 2)[:, None, :]
    image = torch.arange(bsz, device=logits.device)[:, None].expand_as(labels)
    keep = scores > det.score_thresh
    cand, scaled, scores, labels, image, point = (t[keep] for t in (cand, scaled, scores, labels, image, point))  # fmt: skip
    kept = grouped_nms(scaled, scores, image * k + labels, det.nms_thresh)  # by decreasing score
    if bsz == 1:
        kept = kept[: det.detections_per_img]
        counts = [-1]
    else:
        kept = kept[image[kept].argsort(stable=True)]  # image by image, each by decreasing score
        per_image = (image[kept][None, :] == torch.arange(bsz, device=kept.device)[:, None]).sum(1)  # fmt: skip
        start = per_image.cumsum(0) - per_image
        rank = torch.arange(len(kept), device=kept.device) - start[image[kept]]
        kept = kept[rank < det.detections_per_img]
        counts = per_image.clamp(max=det.detections_per_img).tolist()
    if det.merge_boxes:
        merged = merge_boxes(kept, cand, scaled, scores, labels, image, bsz, det.nms_thresh)
        ratio = (originals / sizes).flip(1).repeat(1, 2)[image[kept]]
        return Selected(merged * ratio, merged, scores[kept], labels[kept], image[kept], point[kept], counts)  # fmt: skip
    return Selected(scaled[kept], cand[kept], scores[kept], labels[kept], image[kept], point[kept], counts)  # fmt: skip


def grouped_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_thresh: float) -> torch.Tensor:  # fmt: skip
    """NMS within each group (image x class) in one ``nms`` call: each group's boxes are moved
    apart by an offset, so boxes of different groups never overlap; kept indices by decreasing
    score. torchvision's ``batched_nms`` does this below 1,000 boxes on CPU and in traced graphs
    (so the export), but above that makes one call per group: at batch 16 about 90 calls, most
    of a trained rtdet_n's post-processing. In an export, torchvision's (scripted) form of it."""
    if exporting():
        return batched_nms(boxes, scores, groups, iou_thresh)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    offsets = groups.to(boxes) * (boxes.max() + 1)
    return nms(boxes + offsets[:, None], scores, iou_thresh)


def merge_boxes(kept: torch.Tensor, cand: torch.Tensor, scaled: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, image: torch.Tensor, bsz: int, iou_thresh: float) -> torch.Tensor:  # fmt: skip
    """Weighted NMS: each kept candidate's box (``cand``, [C,4]) becomes the score-weighted mean of
    the candidates of its image and class whose box (``scaled``: NMS's) overlaps it by more than
    ``iou_thresh``, itself included. Candidates are ordered by image (``image`` non-decreasing)
    and compared with their own image's only, padded per image: [M, widest image]."""
    if bsz == 1:  # also the exported graph's path (no counts read from values)
        pads = [t[None] for t in (cand, scaled, scores, labels)]
        valid = torch.ones_like(scores, dtype=torch.bool)[None]
    else:
        counts = torch.bincount(image, minlength=bsz)
        rank = torch.arange(len(image), device=image.device) - (counts.cumsum(0) - counts)[image]
        width = int(counts.max()) if len(image) else 0
        pads = []
        for t in (cand, scaled, scores, labels):
            pad = t.new_zeros(bsz, width, *t.shape[1:])
            pad[image, rank] = t
            pads.append(pad)
        valid = torch.zeros(bsz, width, dtype=torch.bool, device=image.device)
        valid[image, rank] = True
    img = image[kept]
    near_cand, near_scaled, near_scores, near_labels = (t[img] for t in pads)  # [M, width, ...]
    iou = elementwise_iou(scaled[kept][:, None, :], near_scaled)
    weight = ((iou > iou_thresh) & (near_labels == labels[kept][:, None]) & valid[img]) * near_scores  # fmt: skip
    total = weight.sum(1, keepdim=True)
    mean = (weight[..., None] * near_cand).sum(1) / total.clamp(min=1e-12)
    return torch.where(total > 0, mean, cand[kept])
