"""``fcn``: FCN-32s / 16s / 8s (Long et al.): class scores on the deepest map, upsampled with
transposed convolutions (bilinear-initialised) and fused with scores of finer levels (skips)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.seg_common import bilinear_init, level_ratio, match_size
from visionkit.registries import HEADS, LAYERS, UPSAMPLERS

VARIANTS = {"32s": 0, "16s": 1, "8s": 2}


@HEADS.register("fcn")
class FCNHead(nn.Module):
    """``variant`` 32s fuses no skip, 16s one, 8s two; ``mid_channels`` > 0 adds a 3x3
    conv_norm_act (the fc6/fc7 role) before scoring; ``upsampler`` is an UPSAMPLERS name.
    Output: logits at full input resolution (``output_reduction`` 1).
    """

    output_reduction = 1

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        variant: str = "8s",
        mid_channels: int = 0,
        upsampler: Any = "transposed",
        dropout: float = 0.0,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        variant = str(variant).removeprefix("fcn").removeprefix("-")
        if variant not in VARIANTS:
            raise ConfigError(f"fcn: variant must be one of {sorted(VARIANTS)}, got '{variant}'")
        skips = VARIANTS[variant]
        last = len(feature_info) - 1
        if skips > last:
            raise ConfigError(f"fcn-{variant} needs {skips + 1} feature levels, the backbone gives {last + 1}")  # fmt: skip
        self.variant = variant
        self.levels = [last - j for j in range(skips + 1)]  # deepest first
        c_last = feature_info[last].channels
        self.mid = (
            LAYERS.build("conv_norm_act", c_last, mid_channels, kernel_size=3, norm=norm, act=act)
            if mid_channels
            else nn.Identity()
        )
        c_top = mid_channels or c_last
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        k = num_classes
        self.score = nn.ModuleList(
            [nn.Conv2d(c_top, k, 1)]
            + [nn.Conv2d(feature_info[i].channels, k, 1) for i in self.levels[1:]]
        )
        self.fuse_up = nn.ModuleList(
            UPSAMPLERS.build(
                upsampler, k, k, scale_factor=level_ratio(feature_info, fine, coarse, "fcn")
            )
            for coarse, fine in zip(self.levels, self.levels[1:], strict=False)
        )
        self.final_up = UPSAMPLERS.build(upsampler, k, k, scale_factor=feature_info[self.levels[-1]].reduction)  # fmt: skip
        for m in self.modules():
            bilinear_init(m)
        for conv in self.score[1:]:  # skips start at zero: training begins as FCN-32s
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.score[0](self.dropout(self.mid(features[self.levels[0]])))
        for up, score, level in zip(self.fuse_up, self.score[1:], self.levels[1:], strict=True):
            skip = score(features[level])
            x = match_size(up(x), skip) + skip
        return self.final_up(x)
