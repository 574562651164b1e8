"""LOSSES: training criteria, ``(outputs, targets) -> scalar``; built by name from task configs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.registries import LOSSES


@LOSSES.register("cross_entropy", aliases=("ce",))
class CrossEntropy(nn.Module):
    """Cross-entropy over class logits; targets are indices or probabilities (soft/mixed labels).

    ``ignore_index`` pixels (semantic segmentation) do not count; ``label_smoothing`` as in torch.
    """

    def __init__(
        self,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        weight: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.register_buffer("weight", torch.tensor(weight) if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits,
            targets,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
        )


@LOSSES.register("bce", aliases=("binary_cross_entropy",))
class BinaryCrossEntropy(nn.Module):
    """Sigmoid binary cross-entropy for multi-label (multi-hot) classification targets."""

    def __init__(self, label_smoothing: float = 0.0, pos_weight: float | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.pos_weight = pos_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.float()
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
