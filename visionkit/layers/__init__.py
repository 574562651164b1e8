"""Layers: LAYERS, NORMS, ACTIVATIONS and UPSAMPLERS entries; importing this package registers them."""

from visionkit.layers import act, blocks, conv, norm, pool, upsample  # noqa: F401
from visionkit.layers.act import channel_multiplier
from visionkit.layers.blocks import ConvNormAct, build_act, build_norm
from visionkit.layers.conv import Conv2d
from visionkit.layers.level_shared import LevelShared
from visionkit.layers.pool import MaxPool2dWithIndices, MaxUnpool
from visionkit.layers.timm_compat import timm_layer_kwargs

__all__ = [
    "Conv2d",
    "ConvNormAct",
    "LevelShared",
    "MaxPool2dWithIndices",
    "MaxUnpool",
    "build_act",
    "build_norm",
    "channel_multiplier",
    "timm_layer_kwargs",
]
