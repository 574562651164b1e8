"""``rtdet_seg``: the real-time detector (:mod:`visionkit.models.heads.rtdet`) with mask
prototypes, in the spirit of YOLACT / YOLOv8-seg: instance segmentation at one-stage speed.

* a prototype branch on the finest level (3x3 conv, 2x nearest upsampling, 3x3 conv, 1x1 conv to
  ``num_protos`` maps at half that level's stride: 4 px with strides 8/16/32);
* per point ``num_protos`` mask coefficients from their own small branch (two 3x3 convs, one 1x1,
  shared across levels); an instance's mask is ``sigmoid(coefficients @ prototypes)``, cropped
  to its box;
* mask loss: per positive of the box head's task-aligned assignment, the BCE of its mask logits
  against its ground-truth instance (resized and averaged onto the prototype grid) summed over
  the prototype pixels inside the ground-truth box and divided by that box's area there (YOLACT);
  summed over positives and normalised by the same positive count as the other losses;
* post-processing: :func:`~visionkit.models.heads.rtdet.select_detections` (one ``grouped_nms``
  per batch), then every kept detection's mask at once: one batched matrix product (detections
  padded per image), one upsampling to the input, crop, one resize to the original size (one
  call per image only when a batch mixes image sizes).

Outputs follow the detector heads' contract, plus ``masks`` float [M,1,H,W] (probabilities,
cropped to the box, at the size of the image given), as ``maskrcnn``'s.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.blocks import ConvNormAct
from visionkit.layers.level_shared import LevelShared
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.detector_base import (
    DetectorOptions,
    common_channels,
    reject_unknown_options,
)
from visionkit.models.heads.rtdet import (
    TRANSFORM_OPTIONS,
    Assignment,
    FeatureFn,
    RTDetector,
    RTDetHead,
    Target,
    select_detections,
)


def per_image_products(coeffs: torch.Tensor, image: torch.Tensor, protos: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """``coeffs[m] @ protos[image[m]]`` for every row: coeffs [M,k], image [M] (non-decreasing),
    protos [B,k,h,w] -> [M,h,w]; one batched product over the rows padded per image."""
    b, k, h, w = protos.shape
    if b == 1:  # also the exported graph's path (no counts read from values)
        return (coeffs @ protos[0].flatten(1)).view(-1, h, w)
    counts = torch.bincount(image, minlength=b)
    start = counts.cumsum(0) - counts
    rank = torch.arange(len(image), device=image.device) - start[image]
    padded = coeffs.new_zeros(b, int(counts.max()) if len(image) else 0, k)
    padded[image, rank] = coeffs
    return torch.bmm(padded, protos.flatten(2))[image, rank].view(-1, h, w)


def inside_boxes(boxes: torch.Tensor, height: int, width: int, stride: float = 1.0) -> torch.Tensor:
    """[M,height,width] bool: which pixels (of ``stride`` input pixels each) have their centre in
    each box (xyxy, input pixels) [M,4]."""
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    return (xs >= x1) & (xs < x2) & (ys[:, None] >= y1) & (ys[:, None] < y2)


def mask_loss(logits: torch.Tensor, targets: torch.Tensor, boxes: torch.Tensor, stride: float) -> torch.Tensor:  # fmt: skip
    """Sum over instances of the BCE of mask ``logits`` [P,h,w] against ``targets`` [P,h,w] (in
    0..1) over the pixels (``stride`` input pixels each) whose centre lies in the ground-truth box
    [P,4] (input pixels), divided by the box's area in those pixels (at least 1): YOLACT's."""
    crop = inside_boxes(boxes, *logits.shape[-2:], stride=stride)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) / stride**2).clamp(min=1.0)
    return ((bce * crop).flatten(1).sum(1) / area).sum()


class RTSegmenter(nn.Module):
    """``RTDetSegHead.detector``: the box detector ``base`` (an :class:`RTDetector`, its transform
    shared as ``transform``, where the export finds it) plus prototypes, coefficients, mask loss
    and mask assembly."""

    def __init__(self, base: RTDetector, channels: int, num_protos: int, proto_channels: int, mask_weight: float, norm: Any, act: Any) -> None:  # fmt: skip
        super().__init__()
        self.base = base
        self.transform = base.transform
        if base.strides[0] % 2:
            raise ConfigError(f"rtdet_seg: the finest level's stride must be even (prototypes at half of it), got {base.strides[0]}")  # fmt: skip
        self.proto_stride = base.strides[0] // 2
        self.protos = nn.Sequential(
            ConvNormAct(channels, proto_channels, 3, norm=norm, act=act),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvNormAct(proto_channels, proto_channels, 3, norm=norm, act=act),
            ConvNormAct(proto_channels, num_protos, 1, norm=norm, act=act),
        )
        width = max(channels // 4, num_protos)
        self.coef_convs = LevelShared(  # shared convolutions, norms per level
            lambda: nn.Sequential(
                ConvNormAct(channels, width, 3, norm=norm, act=act),
                ConvNormAct(width, width, 3, norm=norm, act=act),
            ),
            len(base.strides),
        )
        self.coef_pred = nn.Conv2d(width, num_protos, 1)
        self.mask_weight = float(mask_weight)

    def coefficients(self, maps: list[torch.Tensor]) -> torch.Tensor:
        """Mask coefficients [B,N,k] of every point, flattened as the box head's outputs."""
        return torch.cat([self.coef_pred(self.coef_convs(m, i)).flatten(2) for i, m in enumerate(maps)], 2).transpose(1, 2)  # fmt: skip

    def forward(self, images: list[torch.Tensor], targets: list[Target] | None, features: FeatureFn) -> Any:  # fmt: skip
        base = self.base
        x, sizes, originals = self.transform(images)
        maps = features(x)
        if len(maps) != len(base.strides):
            raise ConfigError(f"rtdet_seg: built for {len(base.strides)} feature levels, got {len(maps)}")  # fmt: skip
        logits, boxes, points, strides, bins = base.predict(maps)
        coeffs, protos = self.coefficients(maps), self.protos(maps[0])
        if targets is None:
            return self.postprocess(logits, boxes, coeffs, protos, x, sizes, originals, images)
        if any("masks" not in t for t in targets):
            raise ConfigError("rtdet_seg: the targets have no instance masks; use it with task=instance_segmentation (or model/head=rtdet for boxes alone)")  # fmt: skip
        ratio = (sizes / originals).flip(1).repeat(1, 2)  # [B,4]: x, y, x, y
        scaled = [{"boxes": t["boxes"] * ratio[i], "labels": t["labels"]} for i, t in enumerate(targets)]  # fmt: skip
        assignment = base.assign(logits, boxes, points, strides, scaled)
        losses = base.loss(logits, boxes, points, strides, scaled, assignment, bins)
        gt_masks = self.target_masks(targets, sizes, protos.shape[-2:])
        losses["loss_mask"] = self.mask_weight * self.loss(coeffs, protos, gt_masks, assignment)
        return losses

    def target_masks(self, targets: list[Target], sizes: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:  # fmt: skip
        """Ground-truth masks of a batch on the prototype grid, padded to the largest count:
        [B,G,h,w] in 0..1 (resized like their images, then averaged over each prototype pixel)."""
        h, w = int(grid[0]), int(grid[1])
        counts = [len(t["boxes"]) for t in targets]
        out = sizes.new_zeros(len(targets), max(counts, default=0), h, w)
        s = self.proto_stride

        def pooled(masks: torch.Tensor, size: list[float]) -> torch.Tensor:
            m = F.interpolate(masks.to(sizes.device, torch.float32)[:, None], size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)  # fmt: skip
            m = F.pad(m, (0, w * s - m.shape[-1], 0, h * s - m.shape[-2]))
            return F.avg_pool2d(m, s)[:, 0]

        shapes = {(tuple(t["masks"].shape[-2:]), tuple(sz)) for t, sz in zip(targets, sizes.tolist(), strict=True)}  # fmt: skip
        if len(shapes) == 1 and sum(counts):  # one size: one resize for the whole batch
            image = torch.repeat_interleave(torch.arange(len(targets)), torch.tensor(counts)).to(out.device)  # fmt: skip
            rank = torch.cat([torch.arange(c) for c in counts]).to(out.device)
            out[image, rank] = pooled(torch.cat([t["masks"] for t in targets]), sizes[0].tolist())
        elif sum(counts):
            for i, t in enumerate(targets):
                if counts[i]:
                    out[i, : counts[i]] = pooled(t["masks"], sizes[i].tolist())
        return out

    def loss(self, coeffs: torch.Tensor, protos: torch.Tensor, gt_masks: torch.Tensor, assignment: Assignment) -> torch.Tensor:  # fmt: skip
        """:func:`mask_loss` of the assigned positives, divided by the (rank-averaged) positive count."""
        fg, idx = assignment.foreground, assignment.index
        if gt_masks.shape[1] == 0 or not bool(fg.any()):
            return coeffs.sum() * 0.0 + protos.sum() * 0.0
        image = torch.arange(len(fg), device=fg.device)[:, None].expand_as(idx)[fg]
        matched = idx[fg]
        logits = per_image_products(coeffs[fg], image, protos)
        loss = mask_loss(logits, gt_masks[image, matched], assignment.gt_boxes[image, matched], float(self.proto_stride))  # fmt: skip
        return loss / assignment.num_pos

    def postprocess(self, logits: torch.Tensor, boxes: torch.Tensor, coeffs: torch.Tensor, protos: torch.Tensor, x: torch.Tensor, sizes: torch.Tensor, originals: torch.Tensor, images: list[torch.Tensor]) -> list[Target]:  # fmt: skip
        """The box detector's selection, then every detection's mask: product with its image's
        prototypes, upsampled to the input, sigmoid, cropped to its box (input pixels), resized
        to its original image's size."""
        sel = select_detections(self.base, logits, boxes, sizes, originals)
        mask_logits = per_image_products(coeffs[sel.image, sel.point], sel.image, protos)
        up = F.interpolate(mask_logits[:, None], scale_factor=float(self.proto_stride), mode="bilinear", align_corners=False)  # fmt: skip
        up = up[..., : x.shape[-2], : x.shape[-1]]  # the padded input
        outputs = sel.per_image({"boxes": sel.boxes, "labels": sel.labels, "scores": sel.scores})
        same = len({tuple(im.shape[-2:]) for im in images}) == 1
        if same:  # one size (also the exported graph's path): every mask at once
            valid = None if self.transform.size_divisible == 1 else sizes[0].tolist()
            masks = self.masks_at(up, sel.input_boxes, valid, images[0].shape[-2:])
            for out, m in zip(outputs, masks.split(sel.counts) if len(images) > 1 else [masks], strict=True):  # fmt: skip
                out["masks"] = m
        else:
            for i, (out, m, b) in enumerate(zip(outputs, up.split(sel.counts), sel.input_boxes.split(sel.counts), strict=True)):  # fmt: skip
                out["masks"] = self.masks_at(m, b, sizes[i].tolist(), images[i].shape[-2:])
        return outputs

    @staticmethod
    def masks_at(up: torch.Tensor, input_boxes: torch.Tensor, valid: Sequence[float] | None, original: Sequence[int]) -> torch.Tensor:  # fmt: skip
        """Mask logits [M,1,H',W'] on the (padded) input -> probabilities [M,1,H,W] at the
        image's ``original`` size: cropped to the image's ``valid`` part of the input (None: all
        of it, unpadded) and to each box."""
        h, w = up.shape[-2:]
        if valid is not None:  # padded: a batch of mixed sizes, or size_divisible
            h, w = int(valid[0]), int(valid[1])
            up = up[..., :h, :w]
        masks = up.sigmoid() * inside_boxes(input_boxes, h, w)[:, None]
        if (h, w) != tuple(original):  # resized by the detector: back to the image's size
            masks = F.interpolate(masks, size=tuple(original), mode="bilinear", align_corners=False)  # fmt: skip
        return masks


class RTDetSegHead(RTDetHead):
    """``rtdet_seg`` (HEADS): ``rtdet``'s keys plus ``num_protos`` (prototype maps and mask
    coefficients per point), ``proto_channels`` (width of the prototype branch; null: the neck's
    channels) and ``mask_weight`` (weight of the mask loss). Training adds ``loss_mask``;
    evaluation outputs add ``masks`` float [M,1,H,W] (probabilities, input pixels)."""

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        num_protos: int = 32,
        proto_channels: int | None = None,
        mask_weight: float = 2.0,
        norm: Any = "bn",
        act: Any = "swish",
        **options: Any,
    ) -> None:
        names = [*inspect.signature(RTDetHead.__init__).parameters, *inspect.signature(RTDetSegHead.__init__).parameters]  # fmt: skip
        shared = {f for f in DetectorOptions.__dataclass_fields__}
        reject_unknown_options("rtdet_seg", {k: v for k, v in options.items() if k not in shared}, [*names, *TRANSFORM_OPTIONS], names)  # fmt: skip
        super().__init__(feature_info, num_classes, norm=norm, act=act, **options)
        channels = common_channels(feature_info, "rtdet_seg")
        if num_protos < 1 or (proto_channels is not None and proto_channels < 1):
            raise ConfigError(f"rtdet_seg: num_protos and proto_channels must be >= 1, got {num_protos}, {proto_channels} (config keys model.head.*)")  # fmt: skip
        self.detector = RTSegmenter(self.detector, channels, num_protos, proto_channels or channels, mask_weight, norm, act)  # fmt: skip

    def forward(self, images: list[torch.Tensor], targets: list[Target] | None, features: FeatureFn) -> Any:  # fmt: skip
        """Training (targets with ``masks``): {"loss_cls", "loss_box", "loss_mask"}; else per image
        boxes, labels, scores and ``masks`` [M,1,H,W]."""
        return self.detector(images, targets, features)
