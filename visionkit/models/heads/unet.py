"""``unet``: a U-Net decoder over the backbone's levels: upsample (any UPSAMPLERS entry),
concatenate the skip of the next finer level, two conv_norm_act blocks; repeat to the finest level."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.seg_common import level_ratio, level_widths, match_size
from visionkit.registries import HEADS, LAYERS, UPSAMPLERS


@HEADS.register("unet")
class UNetHead(nn.Module):
    """``upsampler``: UPSAMPLERS name or spec (``bilinear``, ``transposed``, ``pixel_shuffle``...);
    ``channels``: decoder width per level (finest first; default: the backbone's). Output: logits
    at the finest level's reduction.
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        upsampler: Any = "bilinear",
        channels: Sequence[int] | None = None,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        widths = level_widths(feature_info, channels, "unet", "skip connections")
        name = upsampler if isinstance(upsampler, str) else (upsampler or {}).get("name")
        if name in ("unpool", "maxunpool"):
            raise ConfigError("unet: 'unpool' needs max-pool indices; use the segnet head for it")
        self.output_reduction = feature_info[0].reduction
        ups, blocks = [], []
        c = feature_info[-1].channels
        for i in range(len(widths) - 2, -1, -1):
            ratio = level_ratio(feature_info, i, i + 1, "unet")
            up = UPSAMPLERS.build(upsampler, c, c, scale_factor=ratio)
            c_cat = c + feature_info[i].channels
            block = nn.Sequential(
                LAYERS.build("conv_norm_act", c_cat, widths[i], kernel_size=3, norm=norm, act=act),
                LAYERS.build(
                    "conv_norm_act", widths[i], widths[i], kernel_size=3, norm=norm, act=act
                ),
            )
            ups.append(up)
            blocks.append(block)
            c = widths[i]
        self.ups = nn.ModuleList(ups)
        self.blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for k, (up, block) in enumerate(zip(self.ups, self.blocks, strict=True)):
            skip = features[len(features) - 2 - k]
            x = block(torch.cat([match_size(up(x), skip), skip], dim=1))
        return self.classifier(x)
