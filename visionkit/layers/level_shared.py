"""Convolutions shared by the levels of a feature pyramid, each level with its own norms (RTMDet's
"SepBN" head).

A head applied to every level with one set of weights must not share its BatchNorms: in training
each level is normalised by its own batch statistics, but one shared norm keeps a single running
average of all levels, so at inference every level is normalised by statistics it never had. On
rtdet_n that moved the boxes of a trained model by up to 0.9 px per edge in eval mode against
0.2 px in training mode (bench/results/rtdet_recipe.md). Per-level norms cost nothing at
inference: each folds into its level's copy of the convolution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


class LevelShared(nn.ModuleList):
    """One stack per level from ``build()`` (e.g. an ``nn.Sequential`` of ConvNormAct); every
    level's convolutions use level 0's weight and bias Parameters, its norms are its own.
    ``forward(x, level)`` runs that level's stack.

    A state dict of the former single shared stack (keys ``<layer>.<name>...``) loads into every
    level, as it was trained."""

    def __init__(self, build: Callable[[], nn.Module], levels: int) -> None:
        if int(levels) < 1:
            raise ValueError(f"LevelShared: levels={levels} must be >= 1")
        super().__init__([build() for _ in range(int(levels))])
        for other in list(self)[1:]:
            for a, b in zip(self[0].modules(), other.modules(), strict=True):
                if isinstance(a, nn.modules.conv._ConvNd):
                    b.weight = a.weight
                    if a.bias is not None:
                        b.bias = a.bias
        self.register_load_state_dict_pre_hook(_from_one_stack)

    def forward(self, x: torch.Tensor, level: int) -> torch.Tensor:
        return self[level](x)


def _from_one_stack(module: LevelShared, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:  # fmt: skip
    """Load hook: a state dict of the former layout (one stack: its keys are one level's keys
    without the level index, none of this layout's keys) is copied to every level."""
    found = {k[len(prefix) :] for k in state_dict if k.startswith(prefix)}
    if not found or found & module.state_dict().keys() or not found <= module[0].state_dict().keys():  # fmt: skip
        return
    for key in found:
        value = state_dict.pop(prefix + key)
        for level in range(len(module)):
            state_dict[f"{prefix}{level}.{key}"] = value
