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
        weight: list[float] | None = None,
    ) -> None:
        super().__init__()
        self.ce = CrossEntropy(label_smoothing=label_smoothing, ignore_index=ignore_index, weight=weight)  # fmt: skip
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.ce_weight * self.ce(logits, targets) + self.dice_weight * self.dice(logits, targets)  # fmt: skip


@LOSSES.register("focal", aliases=("focal_loss",))
class FocalLoss(nn.Module):
    """Softmax focal loss (Lin et al. 2017): ``-w_c (1 - p_c)^gamma log p_c`` of the target class.

    For classification and semantic segmentation (logits [N,K,...], targets int64 [N,...] or
    probabilities [N,K]); ``weight`` is the per-class ``alpha`` (e.g. ``task.class_weights``); the
    mean is weighted like ``cross_entropy``'s (sum over targets / sum of their weights), so
    ``gamma=0`` is exactly weighted cross-entropy. ``ignore_index`` targets do not count.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        weight: list[float] | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        self.register_buffer("weight", torch.tensor(weight) if weight is not None else None)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        log_p = logits.log_softmax(dim=1)
        modulation = (1 - log_p.exp()).pow(self.gamma)
        weight = self.weight if self.weight is not None else logits.new_ones(k)
        shape = [1, k] + [1] * (logits.ndim - 2)
        if targets.dtype.is_floating_point:  # probabilities (MixUp/CutMix)
            soft, valid = targets, None
        else:
            valid = targets != self.ignore_index
            soft = F.one_hot(torch.where(valid, targets, 0), k).movedim(-1, 1).to(logits.dtype)
        if self.label_smoothing:
            soft = soft * (1 - self.label_smoothing) + self.label_smoothing / k
        per_class = -(weight.view(shape) * soft * modulation * log_p)
        loss = per_class.sum(dim=1)
        norm = (weight.view(shape) * soft).sum(dim=1)
        if valid is not None:
            loss, norm = loss[valid], norm[valid]
        return loss.sum() / norm.sum().clamp(min=1e-12)
