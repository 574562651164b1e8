"""``pafpn``: a path-aggregation feature pyramid (PANet, as YOLOX / RTMDet use it) of CSP blocks.

Every selected backbone level is mapped to ``out_channels`` by a 1x1 conv; a top-down pass
(upsample, concatenate, CSP block) and a bottom-up pass (stride-2 conv, concatenate, CSP block)
follow. All outputs have ``out_channels``, so any detection head that needs equal channels
(rtdet, fcos, retinanet, fasterrcnn) reads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.blocks import ConvNormAct
from visionkit.models.backbones.base import FeatureInfo
from visionkit.models.backbones.cspnet import CSPBlock


class PAFPN(nn.Module):
    """``in_indices``: backbone levels (increasing, default the last three); ``num_blocks``:
    bottlenecks per CSP block; ``norm``/``act``: NORMS/ACTIVATIONS specs."""

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        out_channels: int = 64,
        in_indices: Sequence[int] | None = None,
        num_blocks: int = 1,
        norm: Any = "bn",
        act: Any = "swish",
    ) -> None:
        super().__init__()
        n = len(feature_info)
        indices = list(range(max(0, n - 3), n)) if in_indices is None else [int(i) % n for i in in_indices]  # fmt: skip
        if not indices or sorted(set(indices)) != indices:
            raise ConfigError(f"pafpn: in_indices must be increasing backbone levels in 0..{n - 1}, got {in_indices} (config key model.neck.in_indices)")  # fmt: skip
        if out_channels < 1 or num_blocks < 1:
            raise ConfigError(f"pafpn: out_channels and num_blocks must be >= 1, got {out_channels}, {num_blocks}")  # fmt: skip
        c = int(out_channels)
        self.in_indices = indices
        self.lateral = nn.ModuleList(ConvNormAct(feature_info[i].channels, c, 1, norm=norm, act=act) for i in indices)  # fmt: skip
        levels = len(indices)
        self.top_down = nn.ModuleList(CSPBlock(2 * c, c, num_blocks, False, norm=norm, act=act) for _ in range(levels - 1))  # fmt: skip
        self.down = nn.ModuleList(ConvNormAct(c, c, 3, stride=2, norm=norm, act=act) for _ in range(levels - 1))  # fmt: skip
        self.bottom_up = nn.ModuleList(CSPBlock(2 * c, c, num_blocks, False, norm=norm, act=act) for _ in range(levels - 1))  # fmt: skip
        self.feature_info = [FeatureInfo(c, feature_info[i].reduction) for i in indices]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        lat = [conv(features[i]) for conv, i in zip(self.lateral, self.in_indices, strict=True)]
        # top-down: from the coarsest level to the finest
        td = [lat[-1]]
        for j in range(len(lat) - 2, -1, -1):
            up = F.interpolate(td[0], size=lat[j].shape[-2:], mode="nearest")
            td.insert(0, self.top_down[j](torch.cat([up, lat[j]], dim=1)))
        # bottom-up: from the finest level to the coarsest
        outs = [td[0]]
        for j in range(1, len(td)):
            down = self.down[j - 1](outs[-1])
            if down.shape[-2:] != td[j].shape[-2:]:  # odd sizes: stride-2 conv rounds up
                down = down[..., : td[j].shape[-2], : td[j].shape[-1]]
            outs.append(self.bottom_up[j - 1](torch.cat([down, td[j]], dim=1)))
        return outs
