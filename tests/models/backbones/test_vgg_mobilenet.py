"""The vgg and mobilenet backbones: contract (feature_info, stages), registry parts swapped by name."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.layers import MaxPool2dWithIndices
from visionkit.plugins import load_all
from visionkit.registries import BACKBONES, UPSAMPLERS

load_all()

SMALL = {
    "vgg": {"channels": [8, 16, 16], "depths": [1, 1, 2]},
    "mobilenet": {"channels": [8, 8, 16, 16], "depths": [1, 1, 2, 1], "stem_channels": 8},
}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("norm,act", [("bn", "relu"), ("gn", "hswish"), ("sn", "relu6"), ("in", "crelu")])  # fmt: skip
def test_contract_and_shapes(name: str, norm: str, act: str) -> None:
    b = BACKBONES.build({"name": name, "norm": norm, "act": act, **SMALL[name]})
    outs = b(torch.randn(2, 3, 32, 32))
    assert len(outs) == len(b.stages) == len(b.feature_info)
    for out, info in zip(outs, b.feature_info, strict=True):
        assert out.shape == (2, info.channels, 32 // info.reduction, 32 // info.reduction)
    mult = 2 if act == "crelu" else 1
    assert b.feature_info[-1].channels == SMALL[name]["channels"][-1] * mult
    sum(o.float().mean() for o in outs).backward()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_out_indices(name: str) -> None:
    b = BACKBONES.build({"name": name, "out_indices": [1, -1], **SMALL[name]})
    outs = b(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [i.channels for i in b.feature_info]
    assert [i.reduction for i in b.feature_info] == [4, 2 ** len(b.stages)]


def test_mobilenet_uses_dwsep_and_chosen_activation() -> None:
    b = BACKBONES.build({"name": "mobilenet", **SMALL["mobilenet"]})
    types = [type(m).__name__ for m in b.modules()]
    assert "DepthwiseSeparable" in types and "HardSwish" in types and "ReLU" not in types
    b6 = BACKBONES.build({"name": "mobilenet", "act": "relu6", **SMALL["mobilenet"]})
    assert "ReLU6" in {type(m).__name__ for m in b6.modules()}


def test_vgg_width_mult_and_errors() -> None:
    b = BACKBONES.build({"name": "vgg", "width_mult": 0.5, **SMALL["vgg"]})
    assert [i.channels for i in b.feature_info] == [4, 8, 8]
    with pytest.raises(ConfigError, match="equal length"):
        BACKBONES.build({"name": "vgg", "channels": [8, 16], "depths": [1]})


def test_vgg_pools_pair_with_unpool_for_segnet() -> None:
    """Each vgg stage ends in a maxpool that an unpool can be paired with (the pairing, made when
    the model is built, asks that pool to record its indices)."""
    b = BACKBONES.build({"name": "vgg", **SMALL["vgg"]})
    pools = [stage[-1] for stage in b.stages]
    assert all(isinstance(p, MaxPool2dWithIndices) for p in pools)
    c = pools[-1].out_channels
    up = UPSAMPLERS.build("unpool", c, c, 2, pool=pools[-1])
    feats = b(torch.randn(1, 3, 16, 16))
    assert up(feats[-1]).shape[-2:] == feats[-2].shape[-2:]
