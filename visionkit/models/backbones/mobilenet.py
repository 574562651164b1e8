"""``mobilenet``: a MobileNet-style backbone of depthwise-separable blocks (``dwsep``), h-swish by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from visionkit.models.backbones.base import Backbone, FeatureInfo, check_stage_lists, scale_channels
from visionkit.registries import BACKBONES, LAYERS


@BACKBONES.register("mobilenet")
class MobileNet(Backbone):
    """A 3x3 stride-2 stem, then stages of ``dwsep`` blocks (norm and activation after the
    depthwise and after the pointwise conv); every stage after the first starts with stride 2,
    so stage i has reduction 2^(i+1). ``act`` may be any ACTIVATIONS entry (``hswish``, ``relu6``).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 24, 40, 80, 160),
        depths: Sequence[int] = (1, 2, 2, 2, 1),
        stem_channels: int = 16,
        in_chans: int = 3,
        norm: Any = "bn",
        act: Any = "hswish",
        kernel_size: int = 3,
        width_mult: float = 1.0,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        check_stage_lists(channels, depths, "mobilenet")
        (stem_c,) = scale_channels([stem_channels], width_mult)
        stem = LAYERS.build("conv_norm_act", in_chans, stem_c, 3, stride=2, norm=norm, act=act)
        stages, c_in = [], stem.out_channels
        for i, (c_out, depth) in enumerate(zip(scale_channels(channels, width_mult), depths, strict=True)):  # fmt: skip
            blocks: list[nn.Module] = [stem] if i == 0 else []
            for b in range(depth):
                blocks.append(
                    LAYERS.build(
                        "conv_norm_act", c_in, c_out, kernel_size, stride=2 if (i > 0 and b == 0) else 1,
                        norm=norm, act=act, layer="dwsep", dw_norm=norm, dw_act=act,
                    )
                )  # fmt: skip
                c_in = blocks[-1].out_channels
            stages.append(nn.Sequential(*blocks))
            self.stage_info.append(FeatureInfo(c_in, 2 ** (i + 1)))
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(out_indices) if out_indices is not None else None
