"""``cspnet``: a CSPDarknet / CSPNeXt-style backbone (YOLOX, RTMDet) scaled by width and depth.

A stem (3x3 conv, stride 2) and ``num_stages`` stages, each a stride-2 3x3 conv and a CSP block
(two 1x1 branches, bottlenecks on one, concatenated and fused by a 1x1 conv); the last stage of a
full-depth net starts with SPPF (max-pools of growing receptive field). Sizes come from
``widen_factor`` / ``deepen_factor`` over the base widths ``(64, 128, 256, 512, 1024)`` and depths
``(3, 9, 9, 3)``: n = 0.25 / 0.33, s = 0.5 / 0.33, m = 0.75 / 0.67.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.blocks import ConvNormAct
from visionkit.models.backbones.base import Backbone, FeatureInfo
from visionkit.registries import BACKBONES

BASE_WIDTHS = (64, 128, 256, 512, 1024)
BASE_DEPTHS = (3, 9, 9, 3)


def scaled_width(channels: int, factor: float, divisor: int = 8) -> int:
    """``channels * factor`` rounded up to a multiple of ``divisor`` (at least ``divisor``)."""
    return max(divisor, int(math.ceil(channels * factor / divisor) * divisor))


def scaled_depth(blocks: int, factor: float) -> int:
    """``blocks * factor`` rounded, at least one block."""
    return max(1, round(blocks * factor))


class DarknetBottleneck(nn.Module):
    """1x1 then 3x3 conv (same width), with a residual sum when ``shortcut``."""

    def __init__(self, channels: int, shortcut: bool, norm: Any, act: Any) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 1, norm=norm, act=act)
        self.conv2 = ConvNormAct(channels, channels, 3, norm=norm, act=act)
        self.shortcut = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        return x + y if self.shortcut else y


class CSPBlock(nn.Module):
    """Cross-stage partial block: ``main`` (1x1 + ``num_blocks`` bottlenecks) and ``short`` (1x1)
    branches of ``out_channels * expand`` channels each, concatenated and fused by a 1x1 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_blocks: int = 1,
        shortcut: bool = True,
        expand: float = 0.5,
        norm: Any = "bn",
        act: Any = "swish",
    ) -> None:
        super().__init__()
        mid = max(1, int(out_channels * expand))
        self.main = ConvNormAct(in_channels, mid, 1, norm=norm, act=act)
        self.short = ConvNormAct(in_channels, mid, 1, norm=norm, act=act)
        self.blocks = nn.Sequential(*[DarknetBottleneck(mid, shortcut, norm, act) for _ in range(num_blocks)])  # fmt: skip
        self.fuse = ConvNormAct(2 * mid, out_channels, 1, norm=norm, act=act)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.blocks(self.main(x)), self.short(x)], dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained ``kernel_size`` max-pools, concatenated."""

    def __init__(self, channels: int, kernel_size: int = 5, norm: Any = "bn", act: Any = "swish") -> None:  # fmt: skip
        super().__init__()
        mid = channels // 2
        self.reduce = ConvNormAct(channels, mid, 1, norm=norm, act=act)
        self.fuse = ConvNormAct(4 * mid, channels, 1, norm=norm, act=act)
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        pools = [x]
        for _ in range(3):
            pools.append(F.max_pool2d(pools[-1], self.kernel_size, 1, self.kernel_size // 2))
        return self.fuse(torch.cat(pools, dim=1))


@BACKBONES.register("cspnet", aliases=("csp_darknet",))
class CSPNet(Backbone):
    """Stages: ``stem`` (reduction 2), then ``num_stages`` CSP stages (reductions 4, 8, 16, 32).

    ``widths`` (stem + one per stage) and ``depths`` (bottlenecks per stage) are the full-size
    values, scaled by ``widen_factor`` and ``deepen_factor``; ``num_stages`` < 4 builds only the
    first stages (small images: a stride-16 top level, nothing unused). ``spp`` puts SPPF in the
    last stage built.
    """

    def __init__(
        self,
        widen_factor: float = 0.25,
        deepen_factor: float = 0.33,
        num_stages: int = 4,
        widths: Sequence[int] = BASE_WIDTHS,
        depths: Sequence[int] = BASE_DEPTHS,
        spp: bool = True,
        in_chans: int = 3,
        norm: Any = "bn",
        act: Any = "swish",
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= int(num_stages) <= len(depths) or len(widths) != len(depths) + 1:
            raise ConfigError(
                f"cspnet: num_stages must be 1..{len(depths)} and widths one longer than depths "
                f"(stem + stages), got num_stages={num_stages}, {len(widths)} widths, {len(depths)} depths"
            )
        if widen_factor <= 0 or deepen_factor <= 0:
            raise ConfigError(f"cspnet: widen_factor and deepen_factor must be > 0, got {widen_factor}, {deepen_factor}")  # fmt: skip
        chans = [scaled_width(c, widen_factor) for c in widths[: int(num_stages) + 1]]
        stages: list[nn.Module] = [ConvNormAct(in_chans, chans[0], 3, stride=2, norm=norm, act=act)]
        self.stage_info.append(FeatureInfo(chans[0], 2))
        for i in range(int(num_stages)):
            c_in, c_out = chans[i], chans[i + 1]
            last = i == int(num_stages) - 1
            layers: list[nn.Module] = [ConvNormAct(c_in, c_out, 3, stride=2, norm=norm, act=act)]
            if last and spp:
                layers.append(SPPF(c_out, norm=norm, act=act))
            n = scaled_depth(depths[i], deepen_factor)
            layers.append(CSPBlock(c_out, c_out, n, shortcut=not (last and spp), norm=norm, act=act))  # fmt: skip
            stages.append(nn.Sequential(*layers))
            self.stage_info.append(FeatureInfo(c_out, 2 ** (i + 2)))
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(out_indices) if out_indices is not None else None
