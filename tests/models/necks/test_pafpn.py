"""pafpn: equal-channel outputs at the selected levels' strides; other detection heads read it."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import BACKBONES, HEADS, NECKS

load_builtins()


@pytest.mark.parametrize("backbone", [{"name": "cspnet"}, {"name": "simple_cnn", "channels": [8, 16, 24, 32]}])  # fmt: skip
def test_outputs_match_feature_info_on_odd_sizes(backbone: dict) -> None:
    torch.manual_seed(0)
    net = BACKBONES.build(backbone)
    neck = NECKS.build({"name": "pafpn", "out_channels": 24, "in_indices": [1, 2, 3]}, net.feature_info)  # fmt: skip
    x = torch.rand(2, 3, 50, 70)
    outs = neck(net(x))
    reductions = [net.feature_info[i].reduction for i in (1, 2, 3)]
    assert [(f.channels, f.reduction) for f in neck.feature_info] == [(24, r) for r in reductions]
    assert [tuple(o.shape[:2]) for o in outs] == [(2, 24)] * 3
    expected = [tuple(f.shape[-2:]) for f in (net(x)[i] for i in (1, 2, 3))]
    assert [tuple(o.shape[-2:]) for o in outs] == expected


def test_default_levels_are_the_last_three_and_bad_ones_are_refused() -> None:
    net = BACKBONES.build({"name": "cspnet"})
    neck = NECKS.build({"name": "pafpn"}, net.feature_info)
    assert [f.reduction for f in neck.feature_info] == [8, 16, 32]
    with pytest.raises(ConfigError, match="in_indices"):
        NECKS.build({"name": "pafpn", "in_indices": [3, 1]}, net.feature_info)


def test_fcos_trains_on_pafpn() -> None:
    torch.manual_seed(0)
    net = BACKBONES.build({"name": "cspnet", "num_stages": 3})
    neck = NECKS.build({"name": "pafpn", "out_channels": 16, "in_indices": [1, 2, 3]}, net.feature_info)  # fmt: skip
    head = HEADS.build({"name": "fcos", "min_size": 64, "max_size": 64, "num_convs": 1}, neck.feature_info, 2)  # fmt: skip
    images = [torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 30.0]]), "labels": torch.tensor([1])}]
    losses = head(images, targets, lambda x: neck(net(x)))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
