"""The fpn neck: declared feature_info matches the maps it returns, on two backbones."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import BACKBONES, NECKS

load_builtins()
torch.set_num_threads(1)


@pytest.mark.parametrize(
    "backbone_spec",
    [
        {"name": "simple_cnn", "channels": [8, 16, 24, 32]},
        {"name": "timm", "model_name": "test_resnet"},
    ],
)
@pytest.mark.parametrize(("in_indices", "extra"), [(None, 0), ([1, 2, 3], 1), ([2, 3], 2)])
def test_fpn_outputs_match_feature_info(backbone_spec: dict, in_indices: list | None, extra: int) -> None:  # fmt: skip
    backbone = BACKBONES.build(backbone_spec)
    neck = NECKS.build({"name": "fpn", "out_channels": 12, "in_indices": in_indices, "extra_levels": extra}, backbone.feature_info)  # fmt: skip
    x = torch.randn(2, 3, 64, 64)
    outs = neck(backbone(x))
    n_in = len(backbone.feature_info) if in_indices is None else len(in_indices)
    assert len(outs) == len(neck.feature_info) == n_in + extra
    for out, info in zip(outs, neck.feature_info, strict=True):
        assert out.shape[:2] == (2, info.channels)
        assert out.shape[-1] == -(-64 // info.reduction)  # ceil: stride-2 convs round up
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())


@pytest.mark.parametrize("in_indices", [[3, 1], [], [0, 0]])
def test_fpn_rejects_unordered_levels(in_indices: list) -> None:
    backbone = BACKBONES.build({"name": "simple_cnn", "channels": [8, 16, 24, 32]})
    with pytest.raises(ConfigError, match="in_indices"):
        NECKS.build({"name": "fpn", "in_indices": in_indices}, backbone.feature_info)
