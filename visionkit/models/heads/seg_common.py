"""Helpers shared by the semantic segmentation heads (fcn, deeplabv3, unet, segnet).

Every segmentation head maps features (list of NCHW maps) to class logits ``[N, K, h, w]`` at the
reduction it states in ``output_reduction``; the task resizes the logits to the image size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo


def match_size(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``x`` resized (bilinear) to ``ref``'s spatial size when they differ (odd input sizes)."""
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


def level_ratio(info: list[FeatureInfo], fine: int, coarse: int, head: str) -> int:
    """Integer reduction ratio between two feature levels, or a ConfigError naming the head."""
    a, b = info[fine].reduction, info[coarse].reduction
    if b % a or b // a < 2:
        raise ConfigError(
            f"{head}: feature levels {fine} and {coarse} have reductions {a} and {b}; the head needs "
            "each level to be an integer factor >= 2 coarser (pick backbone out_indices)"
        )
    return b // a


def level_widths(
    info: list[FeatureInfo], channels: Sequence[int] | None, head: str, why: str
) -> list[int]:
    """Per-level widths (finest first) of a head over two or more levels: ``channels`` or, when
    None, the backbone's; ConfigErrors name the head (``why`` it needs two levels)."""
    n = len(info)
    if n < 2:
        raise ConfigError(f"{head} needs at least two feature levels ({why})")
    widths = list(channels) if channels is not None else [f.channels for f in info]
    if len(widths) != n:
        raise ConfigError(f"{head}: channels has {len(widths)} entries for {n} feature levels")
    return widths


def bilinear_init(module: nn.Module) -> None:
    """Initialise a square ``ConvTranspose2d`` (in == out channels) as bilinear upsampling (FCN)."""
    if not isinstance(module, nn.ConvTranspose2d) or module.in_channels != module.out_channels:
        return
    k = module.kernel_size[0]
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = torch.arange(k, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    with torch.no_grad():
        module.weight.zero_()
        for c in range(module.in_channels):
            module.weight[c, c] = kernel
        if module.bias is not None:
            module.bias.zero_()
