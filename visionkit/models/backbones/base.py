"""The backbone contract: features with declared channels and reductions, and ordered stages.

Necks, heads and freeze schedules read ``feature_info`` and ``stages``; nothing reads private
attributes or freezes by parameter-name prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from visionkit.errors import ConfigError


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


# -- helpers of the configurable backbones (vgg, mobilenet) ------------------------------------
def scale_channels(channels: Sequence[int], width_mult: float) -> list[int]:
    """Channel counts times ``width_mult``, rounded, at least 1."""
    if width_mult <= 0:
        raise ConfigError(f"width_mult must be > 0, got {width_mult}")
    return [max(1, round(c * width_mult)) for c in channels]


def check_stage_lists(channels: Sequence[int], depths: Sequence[int], name: str) -> None:
    """``channels`` and ``depths`` describe the same number of stages, each at least one block."""
    if len(channels) != len(depths) or not channels:
        raise ConfigError(f"{name}: channels {list(channels)} and depths {list(depths)} must be non-empty and of equal length")  # fmt: skip
    if any(d < 1 for d in depths):
        raise ConfigError(f"{name}: every depth must be >= 1, got {list(depths)}")
