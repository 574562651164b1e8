"""``multi_stage`` head: linear classifier on pooled features of several stages."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.plugins import load_builtins
from visionkit.registries import HEADS

load_builtins()
INFO = [FeatureInfo(4, 2), FeatureInfo(6, 4), FeatureInfo(8, 8)]


def features(n: int = 5) -> list[torch.Tensor]:
    return [torch.randn(n, c, 16 // r, 16 // r) for c, r in ((4, 2), (6, 4), (8, 8))]


def test_without_norm_equals_linear_on_concatenated_means() -> None:
    head = HEADS.build({"name": "multi_stage", "stages": [0, -1], "norm": False}, INFO, 3)
    feats = features()
    pooled = torch.cat([feats[0].mean(dim=(2, 3)), feats[2].mean(dim=(2, 3))], dim=1)
    expected = pooled @ head.fc.weight.T + head.fc.bias
    torch.testing.assert_close(head(feats), expected)


def test_default_uses_every_stage_and_normalises_each() -> None:
    head = HEADS.build("multi_stage", INFO, 3)
    assert head.fc.in_features == 4 + 6 + 8
    head.train()
    out = head(features(8))
    assert out.shape == (8, 3)
    out.sum().backward()
    assert head.fc.weight.grad is not None
    # each stage's pooled features are standardised per channel (batch statistics in training)
    pooled = head.norms[1](features(8)[1].mean(dim=(2, 3)))
    torch.testing.assert_close(pooled.mean(0), torch.zeros(6), atol=1e-5, rtol=0)


def test_bad_stage_index_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.head\.stages"):
        HEADS.build({"name": "multi_stage", "stages": [3]}, INFO, 3)
