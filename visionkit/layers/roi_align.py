"""RoIAlign for small feature maps as two matmuls, and the FPN multi-scale pooler of the R-CNN heads.

torchvision's CPU ``roi_align`` backward is a serial loop over every sample: it took 45 % of a
Mask R-CNN training step on 2 cores. Bilinear sampling and bin averaging are separable, so each
roi is ``Ay @ F @ Ax^T`` with small interpolation matrices: the same values and gradients as
torchvision (``aligned=False``) to float rounding, through threaded matmuls. Under export (ONNX,
TorchScript) it is torchvision's op, which exporters translate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torchvision
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import LevelMapper

# Multiply-adds of the separable form worth one bilinear sample of torchvision's CPU kernel
# (crossover measured between 57 and 103 on a 2-core CPU, fwd + bwd).
DENSE_COST = 64


def roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """torchvision ``roi_align(..., aligned=False)`` for ``rois`` [R, 5] (image index, x1, y1, x2,
    y2 in input pixels) on ``features`` [N, C, H, W]; returns [R, C, out_h, out_w].

    On CPU, when a gradient is needed and the maps are small next to the number of samples, the
    separable form (two batched matmuls with per-roi interpolation matrices) is used; otherwise
    torchvision's kernel (its serial loop is in the backward: forward alone the two are even).
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (
        exporting()
    ):  # ONNX / TorchScript: torchvision's op, which both know (no bincount, no checks)
        return tv_roi_align(features, rois, (out_h, out_w), spatial_scale, sampling_ratio)
    n, c, h, w = features.shape
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise ValueError(f"roi_align: rois must be [R, 5] (image, x1, y1, x2, y2), got {list(rois.shape)}")  # fmt: skip
    r = rois.shape[0]
    if r == 0:
        return features.new_zeros((0, c, out_h, out_w))
    counts = torch.bincount(rois[:, 0].long(), minlength=n)
    if len(counts) > n or rois[:, 0].min() < 0:
        raise ValueError(
            f"roi_align: rois name images {int(rois[:, 0].min())}..{int(rois[:, 0].max())} but "
            f"the features hold {n}"
        )
    separable = features.requires_grad and torch.is_grad_enabled()
    separable = separable and features.device.type == "cpu" and sampling_ratio > 0
    if separable:  # and cheaper: the cost model, measured fwd + bwd
        samples = r * out_h * out_w * sampling_ratio**2
        separable = n * int(counts.max()) * out_h * w * (h + out_w) <= DENSE_COST * samples
    if not separable:
        return tv_roi_align(features, rois, (out_h, out_w), spatial_scale, sampling_ratio)
    return _separable_roi_align(features, rois, counts, (out_h, out_w), spatial_scale, sampling_ratio)  # fmt: skip


def exporting() -> bool:
    """Whether the model is being traced, scripted or exported (ONNX, torch.export)."""
    return bool(
        torch.jit.is_tracing()
        or torch.jit.is_scripting()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_exporting()
    )


def _axis_weights(
    start: torch.Tensor, size: torch.Tensor, bins: int, length: int, sampling_ratio: int
) -> torch.Tensor:
    """[R, bins, length]: each bin's mean bilinear weights over its samples along one axis, with
    torchvision's rules (a sample more than one pixel outside is 0, otherwise clamped to the map).
    """
    points = bins * sampling_ratio
    steps = (torch.arange(points, device=start.device, dtype=start.dtype) + 0.5) / points
    p = start[:, None] + size[:, None] * steps  # [R, points]
    valid = ((p >= -1.0) & (p <= length)).to(p.dtype)
    p = p.clamp(0, length - 1)
    low = p.floor().clamp(max=max(length - 2, 0))
    frac = p - low
    low = low.long()
    high = (low + 1).clamp(max=length - 1)
    weights = p.new_zeros((len(p), points, length))
    weights.scatter_add_(2, low[..., None], ((1 - frac) * valid)[..., None])
    weights.scatter_add_(2, high[..., None], (frac * valid)[..., None])
    return weights.view(len(p), bins, sampling_ratio, length).mean(2)


def _separable_roi_align(
    features: torch.Tensor,
    rois: torch.Tensor,
    counts: torch.Tensor,
    output_size: tuple[int, int],
    spatial_scale: float,
    sampling_ratio: int,
) -> torch.Tensor:
    """RoIAlign as ``Ay @ F @ Ax^T`` per roi: bilinear sampling and bin averaging are separable.
    ``counts``: rois per image (``bincount`` of the image column).
    """
    out_h, out_w = output_size
    n, c, h, w = features.shape
    rois = rois.detach()
    image = rois[:, 0].long()
    start = rois[:, 1:3] * spatial_scale  # x, y in feature pixels
    size = (rois[:, 3:5] * spatial_scale - start).clamp(min=1.0)
    wy = _axis_weights(start[:, 1], size[:, 1], out_h, h, sampling_ratio).to(features.dtype)
    wx = _axis_weights(start[:, 0], size[:, 0], out_w, w, sampling_ratio).to(features.dtype)
    # rois grouped by image into fixed slots, so each image's rois are one matmul
    per_image = int(counts.max())
    order = torch.argsort(image, stable=True)
    rank = torch.empty_like(image)
    rank[order] = (
        torch.arange(len(image), device=image.device) - (counts.cumsum(0) - counts)[image[order]]
    )
    slot = image * per_image + rank
    ay = wy.new_zeros((n * per_image, out_h, h))
    ay[slot] = wy
    ax = wx.new_zeros((n * per_image, out_w, w))
    ax[slot] = wx
    out = torch.einsum(
        "nrih,nchw,nrjw->nrcij",
        ay.view(n, per_image, out_h, h),
        features,
        ax.view(n, per_image, out_w, w),
    )
    return out.reshape(n * per_image, c, out_h, out_w)[slot]


def _level_scale(feature: torch.Tensor, image_size: Sequence[int]) -> float:
    """Power-of-two scale of a feature map relative to the (padded) input, as torchvision infers it."""
    return 2.0 ** round(math.log2(feature.shape[-2] / image_size[0]))


class MultiScaleRoIAlign(torchvision.ops.MultiScaleRoIAlign):
    """torchvision's pooler (same arguments; its detectors check the type) with :func:`roi_align`:
    each box pooled from the FPN level of its size (torchvision's ``LevelMapper``).

    ``scales``: each level's scale (1 / its reduction, from the backbone's ``feature_info``).
    Without them they are inferred on every call as torchvision does, from the largest unpadded
    image, which is wrong for an image much lower than its padded batch (a height of 33 padded
    to 64 gives level scales twice too large) and, exported, a constant of the example image.
    """

    def __init__(self, featmap_names: list[str], output_size: int | tuple[int, ...], sampling_ratio: int, *, canonical_scale: int = 224, canonical_level: int = 4, scales: Sequence[float] | None = None) -> None:  # fmt: skip
        super().__init__(featmap_names, output_size, sampling_ratio, canonical_scale=canonical_scale, canonical_level=canonical_level)  # fmt: skip
        self.fixed_scales = [float(s) for s in scales] if scales is not None else None

    def forward(
        self,
        x: dict[str, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        if not image_shapes:
            raise ValueError("MultiScaleRoIAlign: image_shapes is empty")
        features = [x[name] for name in self.featmap_names]
        if self.fixed_scales is not None:
            scales = self.fixed_scales
        else:
            original = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
            scales = [_level_scale(f, original) for f in features]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])  # fmt: skip
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, scales[0], self.sampling_ratio)
        mapper = LevelMapper(
            round(-math.log2(scales[0])),
            round(-math.log2(scales[-1])),
            canonical_scale=self.canonical_scale,
            canonical_level=self.canonical_level,
        )
        level = mapper(boxes)
        # each level pools its own boxes; exported, their count stays dynamic (no Python branch
        # on it, no len(): a traced constant) and the rows go back in place as one ScatterND
        out = features[0].new_zeros((rois.shape[0], features[0].shape[1], *self.output_size))
        for i, (feature, scale) in enumerate(zip(features, scales, strict=True)):
            idx = torch.where(level == i)[0]
            pooled = roi_align(feature, rois[idx], self.output_size, scale, self.sampling_ratio)
            out = out.index_put((idx,), pooled)
        return out
