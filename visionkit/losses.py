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


@LOSSES.register("dice")
class DiceLoss(nn.Module):
    """Soft multi-class Dice loss over softmax probabilities (Milletari et al.), mean over classes.

    logits [N,K,H,W], targets int64 [N,H,W]; ``ignore_index`` pixels are excluded; classes absent
    from both prediction and target in the batch count as a perfect match (``smooth``).
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        valid = (targets != self.ignore_index).unsqueeze(1).to(logits.dtype)
        probs = logits.softmax(dim=1) * valid
        onehot = F.one_hot(targets.clamp(0, k - 1) * (targets != self.ignore_index), k)
        onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid
        dims = (0, 2, 3)
        inter = (probs * onehot).sum(dims)
        total = probs.sum(dims) + onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (total + self.smooth)
        return 1 - dice.mean()


@LOSSES.register("ce_dice", aliases=("cross_entropy_dice",))
class CrossEntropyDice(nn.Module):
    """``ce_weight * cross_entropy + dice_weight * dice``, both ignoring ``ignore_index``."""

    def __init__(
        self,
        ignore_index: int = 255,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.ce = CrossEntropy(label_smoothing=label_smoothing, ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.ce_weight * self.ce(logits, targets) + self.dice_weight * self.dice(logits, targets)  # fmt: skip
