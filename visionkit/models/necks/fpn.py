"""``fpn``: a feature pyramid network over any backbone's ``feature_info`` (torchvision's FPN ops).

Detection heads read its outputs: one map of ``out_channels`` per selected backbone level (top-down
pathway with lateral 1x1 convs), plus ``extra_levels`` stride-2 max-pooled maps on top.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo


class FPN(nn.Module):
    """Feature pyramid: ``in_indices`` picks backbone levels (default all), each mapped to
    ``out_channels``; ``extra_levels`` adds max-pooled maps with doubled reduction (RetinaNet P6).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        out_channels: int = 64,
        in_indices: Sequence[int] | None = None,
        extra_levels: int = 1,
    ) -> None:
        super().__init__()
        n = len(feature_info)
        indices = list(range(n)) if in_indices is None else [int(i) % n for i in in_indices]
        if not indices or sorted(set(indices)) != indices:
            raise ConfigError(
                f"fpn: in_indices must be increasing backbone levels in 0..{n - 1}, got {in_indices}"
            )
        if out_channels < 1 or extra_levels < 0:
            raise ConfigError(f"fpn: out_channels >= 1 and extra_levels >= 0 needed, got {out_channels}, {extra_levels}")  # fmt: skip
        self.in_indices = indices
        self.extra_levels = int(extra_levels)
        self.fpn = FeaturePyramidNetwork([feature_info[i].channels for i in indices], out_channels)
        reductions = [feature_info[i].reduction for i in indices]
        reductions += [reductions[-1] * 2 ** (k + 1) for k in range(self.extra_levels)]
        self.feature_info = [FeatureInfo(out_channels, r) for r in reductions]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        picked = OrderedDict((str(k), features[i]) for k, i in enumerate(self.in_indices))
        outs = list(self.fpn(picked).values())
        for _ in range(self.extra_levels):
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))
        return outs
