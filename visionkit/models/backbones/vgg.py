"""``vgg``: a VGG-style backbone; convolution, norm and activation come from the registries by name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from visionkit.models.backbones.base import Backbone, FeatureInfo, check_stage_lists, scale_channels
from visionkit.registries import BACKBONES, LAYERS


@BACKBONES.register("vgg")
class VGG(Backbone):
    """Stages of ``depths[i]`` 3x3 ``conv_norm_act`` blocks then a 2x2 ``maxpool`` (reduction 2^(i+1)).

    Defaults are VGG-16 (without the classifier). The pools are ``LAYERS['maxpool']`` modules that
    record their indices, so a SegNet decoder can pair an ``unpool`` with each stage's pool
    (``stage[-1]``). ``layer`` picks the LAYERS entry inside the blocks.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512, 512),
        depths: Sequence[int] = (2, 2, 3, 3, 3),
        in_chans: int = 3,
        norm: Any = "bn",
        act: Any = "relu",
        layer: Any = "conv",
        width_mult: float = 1.0,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_stage_lists(channels, depths, "vgg")
        stages, c_in = [], in_chans
        for i, (c_out, depth) in enumerate(zip(scale_channels(channels, width_mult), depths, strict=True)):  # fmt: skip
            blocks: list[nn.Module] = []
            for _ in range(depth):
                blocks.append(LAYERS.build("conv_norm_act", c_in, c_out, 3, norm=norm, act=act, layer=layer))  # fmt: skip
                c_in = blocks[-1].out_channels
            blocks.append(LAYERS.build("maxpool", c_in, c_in, kernel_size=2))
            stages.append(nn.Sequential(*blocks))
            self.stage_info.append(FeatureInfo(c_in, 2 ** (i + 1)))
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(out_indices) if out_indices is not None else None
