"""Semantic segmentation heads on two backbones: output shape, gradients, overfitting a batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from visionkit.errors import ConfigError
from visionkit.registries import HEADS, UPSAMPLERS

HEAD_SPECS = {
    "fcn-8s": {"name": "fcn", "variant": "8s"},
    "fcn-16s": {"name": "fcn", "variant": "16s"},
    "fcn-32s": {"name": "fcn", "variant": "32s", "mid_channels": 16},
    "deeplabv3": {"name": "deeplabv3", "channels": 16, "rates": [1, 2]},
    "unet-bilinear": {"name": "unet", "upsampler": "bilinear"},
    "unet-transposed": {"name": "unet", "upsampler": "transposed"},
    "segnet": {"name": "segnet"},
}
K = 3


@pytest.mark.parametrize("spec", sorted(HEAD_SPECS))
def test_head_shapes_and_gradients(backbone: torch.nn.Module, spec: str) -> None:
    head = HEADS.build(HEAD_SPECS[spec], backbone.feature_info, K)
    x = torch.randn(2, 3, 64, 64)
    logits = head(backbone(x))
    r = head.output_reduction
    assert logits.shape == (2, K, 64 // r, 64 // r)
    logits.square().mean().backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


@pytest.mark.parametrize("spec", ["fcn-8s", "deeplabv3", "unet-bilinear", "segnet"])
def test_head_overfits_a_fixed_batch(backbone: torch.nn.Module, spec: str) -> None:
    torch.manual_seed(0)
    head = HEADS.build(HEAD_SPECS[spec], backbone.feature_info, K)
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 16:40, 16:40] = 1
    target[:, 44:, :20] = 2
    params = [*head.parameters(), *backbone.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(10):
        logits = F.interpolate(head(backbone(x)), size=(64, 64), mode="bilinear")
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_segnet_decoder_unpools_with_its_encoder_pools() -> None:
    from visionkit.models.backbones.base import FeatureInfo

    info = [FeatureInfo(4, 2), FeatureInfo(4, 4)]
    head = HEADS.build("segnet", info, 2)
    assert all(u.pool is p for u, p in zip(head.unpools, head.pools, strict=True))
    assert all(p.record_indices for p in head.pools)  # the pairing asks them for indices
    # a single maximum per 2x2 window returns to its own position after unpooling
    head.pools[0](torch.arange(16.0).view(1, 1, 4, 4).expand(1, 4, 4, 4).contiguous())
    restored = head.unpools[0](torch.ones(1, 4, 2, 2))
    assert restored[0, 0].nonzero().tolist() == [[1, 1], [1, 3], [3, 1], [3, 3]]
    # no parameter is registered twice (the unpool references its pool)
    names = [n for n, _ in head.named_parameters()]
    assert len(names) == len({id(p) for p in head.parameters()})


def test_fcn_transposed_upsamplers_start_bilinear() -> None:
    from visionkit.models.heads.seg_common import bilinear_init

    up = UPSAMPLERS.build("transposed", 1, 1, scale_factor=2)
    bilinear_init(up)
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y = up(x)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-5)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "fcn", "variant": "4s"}, "variant"),
        ({"name": "unet", "upsampler": "unpool"}, "segnet"),
        ({"name": "unet", "channels": [4]}, "channels"),
    ],
)
def test_bad_head_configs_name_the_problem(spec: dict, message: str) -> None:
    from visionkit.models.backbones.base import FeatureInfo

    info = [FeatureInfo(4, 2), FeatureInfo(8, 4)]
    with pytest.raises(ConfigError, match=message):
        HEADS.build(spec, info, 2)
