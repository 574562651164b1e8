"""The backbone contract: features with declared channels and reductions, and ordered stages.

Necks, heads and freeze schedules read ``feature_info`` and ``stages``; nothing reads private
attributes or freezes by parameter-name prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    """One output feature map: its channel count and its stride w.r.t. the input image."""

    channels: int
    reduction: int


class Backbone(nn.Module):
    """Base class: ``stages`` run in order; ``forward`` returns the outputs of ``out_indices``.

    Subclasses fill ``self.stages`` (an ``nn.ModuleList``, input side first) and
    ``self.stage_info`` (one FeatureInfo per stage). ``out_indices`` picks which stage outputs are
    returned (default: all), and ``feature_info`` describes exactly those.
    """

    stages: nn.ModuleList

    def __init__(self) -> None:
        super().__init__()
        self.stage_info: list[FeatureInfo] = []
        self.out_indices: tuple[int, ...] | None = None

    @property
    def feature_info(self) -> list[FeatureInfo]:
        return [self.stage_info[i] for i in self._indices()]

    def _indices(self) -> tuple[int, ...]:
        n = len(self.stage_info)
        if self.out_indices is None:
            return tuple(range(n))
        return tuple(i % n for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        wanted = set(self._indices())
        last = max(wanted)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in wanted:
                outs.append(x)
            if i == last:
                break
        return outs
