"""``tv_fcn`` and ``tv_deeplabv3``: torchvision's FCN and DeepLabV3 heads (``classifier.*``
parameter names), on the deepest feature map, so torchvision's ``fcn_*``/``deeplabv3_*`` state
dicts load one-to-one. Output: logits at the deepest map's reduction; the task upsamples them
bilinearly to the image, as torchvision does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from visionkit.models.backbones.base import FeatureInfo


class TorchvisionFCNHead(nn.Module):
    """torchvision's ``FCNHead``: 3x3 conv to in_channels/4, BN, ReLU, dropout 0.1, 1x1 classifier."""

    def __init__(self, feature_info: list[FeatureInfo], num_classes: int) -> None:
        super().__init__()
        from torchvision.models.segmentation.fcn import FCNHead

        self.output_reduction = feature_info[-1].reduction
        self.classifier = FCNHead(feature_info[-1].channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[-1])


class TorchvisionDeepLabV3Head(nn.Module):
    """torchvision's ``DeepLabHead``: ASPP (256 channels at ``rates``), 3x3 conv, BN, ReLU, 1x1."""

    def __init__(
        self, feature_info: list[FeatureInfo], num_classes: int, rates: Sequence[int] = (12, 24, 36)
    ) -> None:
        super().__init__()
        from torchvision.models.segmentation.deeplabv3 import DeepLabHead

        self.output_reduction = feature_info[-1].reduction
        self.classifier = DeepLabHead(feature_info[-1].channels, num_classes, tuple(int(r) for r in rates))  # fmt: skip

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(features[-1])
