"""cspnet: stages and feature_info per size, scaling rules, freeze schedules through its stages."""

from __future__ import annotations

import pytest
import torch

from visionkit.errors import ConfigError
from visionkit.models.backbones.cspnet import CSPBlock, scaled_depth, scaled_width
from visionkit.plugins import load_builtins
from visionkit.registries import BACKBONES, CALLBACKS

load_builtins()


@pytest.mark.parametrize(
    ("widen", "deepen", "channels", "blocks"),
    [
        (0.25, 0.33, [16, 32, 64, 128, 256], [1, 3, 3, 1]),
        (0.5, 0.33, [32, 64, 128, 256, 512], [1, 3, 3, 1]),
    ],
)
def test_sizes_scale_widths_and_depths(widen: float, deepen: float, channels: list[int], blocks: list[int]) -> None:  # fmt: skip
    net = BACKBONES.build({"name": "cspnet", "widen_factor": widen, "deepen_factor": deepen})
    assert [f.channels for f in net.feature_info] == channels
    assert [f.reduction for f in net.feature_info] == [2, 4, 8, 16, 32]
    csp = [m for s in net.stages for m in s.modules() if isinstance(m, CSPBlock)]
    assert [len(c.blocks) for c in csp] == blocks
    assert (scaled_width(64, 0.75), scaled_width(10, 0.1), scaled_depth(9, 0.67), scaled_depth(3, 0.1)) == (48, 8, 6, 1)  # fmt: skip


def test_forward_gives_the_declared_features_and_stops_at_num_stages() -> None:
    torch.manual_seed(0)
    net = BACKBONES.build({"name": "cspnet", "num_stages": 3, "out_indices": [1, 2, 3]}).eval()
    assert len(net.stages) == 4 and [f.reduction for f in net.feature_info] == [4, 8, 16]
    outs = net(torch.rand(2, 3, 50, 70))
    # stride-2 'same' convolutions: ceil(size / reduction)
    assert [tuple(o.shape) for o in outs] == [(2, 32, 13, 18), (2, 64, 7, 9), (2, 128, 4, 5)]


@pytest.mark.parametrize("bad", [{"num_stages": 0}, {"num_stages": 5}, {"widen_factor": 0}, {"widths": [8, 16]}])  # fmt: skip
def test_bad_options_are_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError, match="cspnet"):
        BACKBONES.build({"name": "cspnet", **bad})


def test_partial_freeze_schedule_trains_the_last_stages_only() -> None:
    """The schedules read ``stages``: every backbone parameter is in a stage (no backbone.rest)."""
    from tests import deploy_models

    task = deploy_models.build("detection", model=deploy_models.RTDET)  # cspnet, 3 stages
    names = [n for n, _ in task.named_parts()]
    assert names == ["backbone.0", "backbone.1", "backbone.2", "backbone.3", "neck", "head"]
    trainable = CALLBACKS.build({"name": "partial", "stages": 2}).apply_phase(task, 0)
    assert set(trainable) == {"backbone.2", "backbone.3", "neck", "head"}
    for name, part in task.named_parts():
        assert all(p.requires_grad == (name in trainable) for p in part.parameters()), name
