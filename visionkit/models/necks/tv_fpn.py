"""``tv_fpn``: torchvision's ``BackboneWithFPN`` pyramid as its detectors build it, with its
parameter names (``fpn.inner_blocks``, ``fpn.layer_blocks``, ``fpn.extra_blocks``).

``extra``: ``maxpool`` (Faster/Mask R-CNN: one stride-2 max-pooled level), ``p6p7`` (RetinaNet,
FCOS: two stride-2 convs on P5, or on C5 with ``p6p7_input=c5`` as the _v2 RetinaNet) or ``none``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.registries import NORMS

EXTRA_LEVELS = {"maxpool": 1, "p6p7": 2, "none": 0}


class TorchvisionFPN(nn.Module):
    """FPN over backbone levels ``in_indices`` (default: all) with ``out_channels``; ``norm`` a
    NORMS name inside the FPN convs (None: plain convs with bias; the _v2 detectors use ``bn``).
    """

    def __init__(
        self,
        feature_info: Sequence[FeatureInfo],
        out_channels: int = 256,
        in_indices: Sequence[int] | None = None,
        extra: str = "maxpool",
        p6p7_input: str = "p5",
        norm: Any = None,
    ) -> None:
        super().__init__()
        n = len(feature_info)
        indices = list(range(n)) if in_indices is None else [int(i) % n for i in in_indices]
        if not indices or sorted(set(indices)) != indices:
            raise ConfigError(f"tv_fpn: in_indices must be increasing backbone levels in 0..{n - 1}, got {in_indices} (model.neck.in_indices)")  # fmt: skip
        if extra not in EXTRA_LEVELS:
            raise ConfigError(f"tv_fpn: extra must be one of {sorted(EXTRA_LEVELS)}, got '{extra}' (model.neck.extra)")  # fmt: skip
        if p6p7_input not in ("p5", "c5"):
            raise ConfigError(f"tv_fpn: p6p7_input must be p5 or c5, got '{p6p7_input}' (model.neck.p6p7_input)")  # fmt: skip
        self.in_indices = indices
        in_channels = [feature_info[i].channels for i in indices]
        blocks: nn.Module | None = None
        if extra == "maxpool":
            blocks = LastLevelMaxPool()
        elif extra == "p6p7":
            source = out_channels if p6p7_input == "p5" else in_channels[-1]
            blocks = LastLevelP6P7(source, out_channels)
            if p6p7_input == "c5" and source == out_channels:
                blocks.use_P5 = False
        norm_layer = (lambda c: NORMS.build(norm, c)) if norm is not None else None
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=blocks, norm_layer=norm_layer)  # fmt: skip
        reductions = [feature_info[i].reduction for i in indices]
        reductions += [reductions[-1] * 2 ** (k + 1) for k in range(EXTRA_LEVELS[extra])]
        self.feature_info = [FeatureInfo(out_channels, r) for r in reductions]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        picked = OrderedDict((str(k), features[i]) for k, i in enumerate(self.in_indices))
        return list(self.fpn(picked).values())
