"""torchvision-layout backbones: declared features match the maps, stages hold every parameter."""

from __future__ import annotations

import pytest
import torch

from visionkit.plugins import load_builtins
from visionkit.registries import BACKBONES

load_builtins()


@pytest.mark.parametrize(
    "spec",
    [
        {"name": "resnet", "depth": 18},
        {"name": "resnet", "depth": 34, "norm": "frozen_bn"},
        {"name": "resnet", "depth": 50, "dilation": [False, True, True]},
        {"name": "mobilenet_v3_large"},
        {"name": "mobilenet_v3_large", "dilated": True, "norm": "gn"},
    ],
    ids=lambda s: "-".join(str(v) for v in s.values()),
)
def test_features_and_stages(spec: dict) -> None:
    torch.set_num_threads(1)
    net = BACKBONES.build(spec).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = net(x)
    assert [(m.shape[1], 64 // m.shape[-1]) for m in maps] == [(f.channels, f.reduction) for f in net.feature_info]  # fmt: skip
    in_stages = {id(p) for s in net.stages for p in s.parameters()}
    assert in_stages == {id(p) for p in net.parameters()}  # freeze schedules reach every weight
    with torch.no_grad():  # the stages run in order give the last map
        y = x
        for stage in net.stages:
            y = stage(y)
    torch.testing.assert_close(y, maps[-1])


def test_resnet_keys_are_torchvisions() -> None:
    import torchvision

    net = BACKBONES.build({"name": "resnet", "depth": 18})
    theirs = {k for k in torchvision.models.resnet18(weights=None).state_dict() if not k.startswith("fc.")}  # fmt: skip
    assert set(net.state_dict()) == theirs


def test_bad_depth_is_a_config_error() -> None:
    from visionkit.errors import ConfigError

    with pytest.raises(ConfigError, match="depth"):
        BACKBONES.build({"name": "resnet", "depth": 101})
