"""The plugin's parts: the ``squareplus`` activation and the ``example_net`` backbone."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from visionkit import ACTIVATIONS, BACKBONES, LAYERS, Backbone, FeatureInfo


@ACTIVATIONS.register("squareplus")
class Squareplus(nn.Module):
    """Squareplus (So, 2021): (x + sqrt(x^2 + b)) / 2, a smooth ReLU without exponentials."""

    def __init__(self, b: float = 4.0) -> None:
        super().__init__()
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x + torch.sqrt(x * x + self.b))


@BACKBONES.register("example_net")
class ExampleNet(Backbone):
    """Three stride-2 stages of ``conv_norm_act`` with the plugin's activation by default."""

    def __init__(
        self, width: int = 16, in_chans: int = 3, norm: Any = "bn", act: Any = "squareplus"
    ) -> None:
        super().__init__()
        stages, c_in = [], in_chans
        for i in range(3):
            block = LAYERS.build("conv_norm_act", c_in, width * 2**i, stride=2, norm=norm, act=act)
            stages.append(block)
            c_in = block.out_channels
            self.stage_info.append(FeatureInfo(c_in, 2 ** (i + 1)))
        self.stages = nn.ModuleList(stages)
