"""``multi_stage`` head: one linear classifier on pooled features from several backbone stages.

For data far from the pretraining domain, early stages (edges, textures) often transfer better
than the last one; pooling several stages and normalising each lets a linear probe use them all.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.registries import HEADS


@HEADS.register("multi_stage", aliases=("multi_stage_linear",))
class MultiStageHead(nn.Module):
    """Global average pooling of the feature maps ``stages`` (default: all), each normalised by a
    non-affine BatchNorm (their scales differ), concatenated, then dropout + a linear layer.
    """

    def __init__(
        self,
        feature_info: list[FeatureInfo],
        num_classes: int,
        stages: list[int] | None = None,
        norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = len(feature_info)
        indices = list(range(n)) if stages is None else [int(i) for i in stages]
        bad = [i for i in indices if not -n <= i < n]
        if bad or not indices:
            raise ConfigError(
                f"model.head.stages={stages}: indices must lie in [-{n}, {n}) "
                f"(the backbone gives {n} feature maps)"
            )
        self.stages = [i % n for i in indices]
        channels = [feature_info[i].channels for i in self.stages]
        self.norms = nn.ModuleList(
            nn.BatchNorm1d(c, affine=False) if norm else nn.Identity() for c in channels
        )
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(sum(channels), num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = [
            norm(features[i].mean(dim=(2, 3)))
            for i, norm in zip(self.stages, self.norms, strict=True)
        ]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))
