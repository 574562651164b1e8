"""Two small backbones (built-in and timm) that every head is tested on."""

from __future__ import annotations

import pytest
import torch

from visionkit.plugins import load_builtins

load_builtins()
torch.set_num_threads(1)  # the CPU is shared: oversubscribed threads crawl

BACKBONE_SPECS = {
    "simple_cnn": {"name": "simple_cnn", "channels": [8, 16, 24, 32]},
    "timm_test_resnet": {"name": "timm", "model_name": "test_resnet"},
}


@pytest.fixture(params=sorted(BACKBONE_SPECS))
def backbone(request: pytest.FixtureRequest) -> torch.nn.Module:
    from visionkit.registries import BACKBONES

    torch.manual_seed(0)
    return BACKBONES.build(BACKBONE_SPECS[request.param])
