"""``deeplabv3``: atrous spatial pyramid pooling (LAYERS ``aspp``) on the deepest map, a 3x3
conv_norm_act, then a 1x1 classifier (Chen et al., DeepLabv3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visionkit.models.backbones.base import FeatureInfo
from visionkit.registries import HEADS, LAYERS


@HEADS.register("deeplabv3", aliases=("deeplab",))
class DeepLabV3Head(nn.Module):
    """ASPP at ``rates`` (dilations; scale them to the deepest map's size) with ``channels``
    outputs. Output: logits at the deepest map's reduction (``output_reduction``).
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        channels: int = 64,
        rates: Sequence[int] = (6, 12, 18),
        dropout: float = 0.1,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        c_in = feature_info[-1].channels
        self.output_reduction = feature_info[-1].reduction
        self.aspp = LAYERS.build("aspp", c_in, channels, rates=tuple(rates), norm=norm, act=act)
        self.conv = LAYERS.build("conv_norm_act", channels, channels, kernel_size=3, norm=norm, act=act)  # fmt: skip
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(self.aspp(features[-1]))))
