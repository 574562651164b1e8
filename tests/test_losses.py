"""The focal loss against its definition: gamma=0 is torch's weighted cross-entropy; gamma>0
follows -w_t (1-p_t)^gamma log p_t with the weighted mean; ignore_index and soft targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from visionkit.plugins import load_builtins
from visionkit.registries import LOSSES

load_builtins()
W = [0.5, 1.0, 2.0]


def test_gamma_zero_is_weighted_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 3, 4, 4, generator=g), torch.randint(0, 3, (6, 4, 4), generator=g)  # fmt: skip
    targets[0, 0, 0] = 255
    focal = LOSSES.build("focal", gamma=0.0, weight=W, ignore_index=255)(logits, targets)
    ce = F.cross_entropy(logits, targets, weight=torch.tensor(W), ignore_index=255)
    torch.testing.assert_close(focal, ce)


def test_focal_follows_its_definition() -> None:
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g)
    p_t = logits.softmax(1)[torch.arange(8), targets]
    w_t = torch.tensor(W)[targets]
    expected = (-w_t * (1 - p_t) ** 2 * p_t.log()).sum() / w_t.sum()
    torch.testing.assert_close(LOSSES.build("focal", gamma=2.0, weight=W)(logits, targets), expected)  # fmt: skip
    soft = F.one_hot(targets, 3).float()  # probabilities equal to the indices give the same loss
    torch.testing.assert_close(LOSSES.build("focal", weight=W)(logits, soft), expected)
