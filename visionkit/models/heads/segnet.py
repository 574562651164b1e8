"""``segnet``: a SegNet encoder-decoder that carries max-pool indices (Badrinarayanan et al.).

The head's encoder starts at the backbone's finest map and max-pools (LAYERS ``maxpool``, which
records indices) down the levels, fusing each backbone map on the way; the decoder goes back up
with ``unpool`` (UPSAMPLERS) paired with those pools, so values return to where maxima were found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.heads.seg_common import level_ratio, level_widths, match_size
from visionkit.registries import HEADS, LAYERS, UPSAMPLERS


@HEADS.register("segnet")
class SegNetHead(nn.Module):
    """``channels``: width per level (finest first; default the backbone's). Pool size between
    levels is their reduction ratio. Output: logits at the finest level's reduction.
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        channels: Sequence[int] | None = None,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        widths = level_widths(feature_info, channels, "segnet", "one pooling step")
        self.output_reduction = feature_info[0].reduction

        def cna(c_in: int, c_out: int) -> nn.Module:
            return LAYERS.build("conv_norm_act", c_in, c_out, kernel_size=3, norm=norm, act=act)

        self.stem = cna(feature_info[0].channels, widths[0])
        pools, enc, dec, unpools = [], [], [], []
        for i in range(1, len(widths)):
            ratio = level_ratio(feature_info, i - 1, i, "segnet")
            pool = LAYERS.build("maxpool", widths[i - 1], kernel_size=ratio)
            pools.append(pool)
            enc.append(cna(widths[i - 1] + feature_info[i].channels, widths[i]))
            dec.append(cna(widths[i], widths[i - 1]))  # back to the pooled map's channels
            unpools.append(UPSAMPLERS.build("unpool", widths[i - 1], scale_factor=ratio, pool=pool))
        self.pools = nn.ModuleList(pools)
        self.enc = nn.ModuleList(enc)
        self.dec = nn.ModuleList(dec)
        self.unpools = nn.ModuleList(unpools)
        self.out = cna(widths[0], widths[0])
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.stem(features[0])
        for pool, enc, feat in zip(self.pools, self.enc, features[1:], strict=True):
            x = pool(x)
            x = enc(torch.cat([x, match_size(feat, x)], dim=1))
        for dec, unpool in zip(reversed(self.dec), reversed(self.unpools), strict=True):
            x = unpool(dec(x))
        return self.classifier(self.out(x))
