"""``simple_cnn``: a small plain CNN whose convolution, norm and activation come from registries."""

from __future__ import annotations

from typing import Any

from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import Backbone, FeatureInfo
from visionkit.registries import BACKBONES, LAYERS


@BACKBONES.register("simple_cnn")
class SimpleCNN(Backbone):
    """Stages of ``conv_norm_act`` blocks, each stage halving H and W.

    ``downsample="maxpool"`` (default) runs the stage's blocks at stride 1 and ends it with a 2x2
    max-pool (the layout that learns shapes fastest); ``"stride"`` makes the first block stride 2
    instead. ``layer`` picks the LAYERS entry inside the blocks (e.g. ``dwsep``), ``norm``/``act``
    the NORMS/ACTIVATIONS entries, by name or spec.
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 32, 64, 128),
        blocks_per_stage: int = 1,
        in_chans: int = 3,
        norm: Any = "bn",
        act: Any = "relu",
        layer: Any = "conv",
        downsample: str = "maxpool",
        out_indices: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if downsample not in ("maxpool", "stride"):
            raise ConfigError(
                f"simple_cnn: downsample must be 'maxpool' or 'stride', got {downsample!r}"
            )
        strided = downsample == "stride"
        stages, c_in, reduction = [], in_chans, 1
        for c_out in channels:
            blocks = []
            for b in range(blocks_per_stage):
                block = LAYERS.build(
                    "conv_norm_act",
                    c_in,
                    c_out,
                    kernel_size=3,
                    stride=2 if strided and b == 0 else 1,
                    norm=norm,
                    act=act,
                    layer=layer,
                )
                blocks.append(block)
                c_in = block.out_channels
            if not strided:
                blocks.append(LAYERS.build("maxpool", c_in, c_in, kernel_size=2))
            reduction *= 2
            stages.append(nn.Sequential(*blocks))
            self.stage_info.append(FeatureInfo(c_in, reduction))
        self.stages = nn.ModuleList(stages)
        self.out_indices = tuple(out_indices) if out_indices is not None else None
