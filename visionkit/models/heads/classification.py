"""Classification heads: features (list of NCHW maps) -> logits [N, num_classes].

``linear`` pools the last map then applies a fully connected layer; ``conv`` applies a 1x1
convolution first and pools the class map, so any input size works.
"""

from __future__ import annotations

import torch
from torch import nn

from visionkit.models.backbones.base import FeatureInfo
from visionkit.registries import HEADS


@HEADS.register("linear", aliases=("fc",))
class LinearHead(nn.Module):
    """Global average pooling + dropout + fully connected layer on the last feature map."""

    def __init__(
        self, feature_info: list[FeatureInfo], num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(feature_info[-1].channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pooled = features[-1].mean(dim=(2, 3))
        return self.fc(self.dropout(pooled))


@HEADS.register("conv", aliases=("conv1x1",))
class ConvHead(nn.Module):
    """A 1x1 convolution in place of the fully connected layer (fully convolutional), then pooling."""

    def __init__(
        self, feature_info: list[FeatureInfo], num_classes: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(feature_info[-1].channels, num_classes, kernel_size=1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(features[-1])).mean(dim=(2, 3))
