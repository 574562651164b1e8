"""conv_norm_act bookkeeping, bottleneck, hdc's gridding rule, aspp."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
from torch import nn

import visionkit.layers  # noqa: F401
from visionkit.analysis import receptive_field
from visionkit.errors import ConfigError
from visionkit.layers.blocks import check_hdc_rates
from visionkit.registries import LAYERS


def test_conv_norm_act_bias_only_without_norm() -> None:
    assert LAYERS.build("conv_norm_act", 3, 4).conv.bias is None
    assert LAYERS.build("conv_norm_act", 3, 4, norm=None).conv.bias is not None
    assert LAYERS.build("conv_norm_act", 3, 4, norm="none").conv.bias is not None
    assert LAYERS.build("conv_norm_act", 3, 4, bias=True).conv.bias is not None
    assert not hasattr(LAYERS.build("conv_norm_act", 3, 4, norm=None, act=None), "act")


def test_conv_norm_act_accepts_every_spec_form() -> None:
    x = torch.randn(2, 3, 8, 8)
    for norm in ("gn", {"name": "gn", "num_groups": 2}, functools.partial(nn.GroupNorm, 2)):
        for act in ("relu6", {"name": "leaky_relu", "negative_slope": 0.2}, nn.ReLU):
            block = LAYERS.build("conv_norm_act", 3, 4, norm=norm, act=act)
            assert isinstance(block.norm, nn.GroupNorm) and block(x).shape == (2, 4, 8, 8)
    block = LAYERS.build("conv_norm_act", 3, 4, norm={"name": "gn", "num_groups": 2})
    assert block.norm.num_groups == 2


def test_conv_norm_act_crelu_channels_and_chaining() -> None:
    a = LAYERS.build("conv_norm_act", 3, 4, stride=2, act="crelu")
    b = LAYERS.build("conv_norm_act", a.out_channels, 5, act="crelu")
    y = b(a(torch.randn(2, 3, 9, 9)))
    assert a.out_channels == 8 and y.shape == (2, 10, 5, 5) and b.out_channels == 10


@pytest.mark.parametrize("layer", ["conv", "dilated", "dwsep", "asym", "bottleneck"])
def test_conv_norm_act_with_other_layers(layer: str) -> None:
    block = LAYERS.build("conv_norm_act", 4, 8, stride=1, layer=layer)
    assert block(torch.randn(2, 4, 6, 6)).shape == (2, 8, 6, 6)


def test_conv_norm_act_refuses_unknown_layer_kwargs() -> None:
    with pytest.raises(ConfigError, match=r"does not accept.*'rates'"):
        LAYERS.build("conv_norm_act", 4, 8, layer="conv", rates=[1, 2])


def test_bottleneck_structure() -> None:
    m = LAYERS.build("bottleneck", 16, 32, stride=2)
    assert m.reduce.conv.kernel_size == (1, 1) and m.conv.conv.kernel_size == (3, 3)
    assert m.reduce.out_channels == 8 and m.expand.conv.kernel_size == (1, 1)
    assert m(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)


def _holes(rates: list[int], k: int) -> bool:
    """Whether stacked 1-D dilated k-tap kernels leave holes in the receptive field (direct)."""
    cover = np.ones(1)
    for r in rates:
        kernel = np.zeros(r * (k - 1) + 1)
        kernel[::r] = 1
        cover = np.convolve(cover, kernel)
    return bool((cover == 0).any())


@pytest.mark.parametrize("rates", [[2, 2, 2], [2, 4, 8], [3, 6]])
def test_hdc_refuses_common_factor(rates: list[int]) -> None:
    with pytest.raises(ConfigError, match="common factor"):
        LAYERS.build("hdc", 4, 4, rates=rates)


def test_hdc_refuses_m2_rule() -> None:
    with pytest.raises(ConfigError, match="M_2 = 5"):
        LAYERS.build("hdc", 4, 4, rates=[1, 2, 9])
    assert _holes([1, 2, 9], 3)


@pytest.mark.parametrize("rates", [[2, 3], [4, 1]])
def test_hdc_refuses_first_rate_not_one(rates: list[int]) -> None:
    """These pass the common-factor and M_2 rules but grid; the first rate must be 1."""
    assert _holes(rates, 3)
    with pytest.raises(ConfigError, match="start with rate 1"):
        LAYERS.build("hdc", 4, 4, rates=rates)


def test_hdc_accepted_rates_have_no_holes() -> None:
    """Every rate list the rule accepts covers its receptive field fully (checked directly)."""
    accepted = 0
    for k, n in itertools.product((3, 5), (1, 2, 3)):
        for rates in itertools.product(range(1, 8), repeat=n):
            try:
                check_hdc_rates(rates, k)
            except ConfigError:
                continue
            accepted += 1
            assert not _holes(list(rates), k), (rates, k)
    assert accepted > 50


def test_hdc_stack() -> None:
    m = LAYERS.build("hdc", 3, 6, rates=[1, 2, 5])
    assert [b.conv.dilation for b in m] == [(1, 1), (2, 2), (5, 5)]
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 6, 16, 16)
    assert receptive_field([(3, 1, r) for r in (1, 2, 5)]) == 17


def test_aspp_branches_same_size_then_projected() -> None:
    m = LAYERS.build("aspp", 8, 6, rates=[2, 3], mid_channels=4)
    assert len(m.branches) == 4  # 1x1, two rates, pooling
    assert [b.conv.dilation for b in m.branches[1:3]] == [(2, 2), (3, 3)]
    assert m.project.conv.in_channels == 16 and m.project.conv.kernel_size == (1, 1)
    assert m(torch.randn(2, 8, 9, 7)).shape == (2, 6, 9, 7)
    no_pool = LAYERS.build("aspp", 8, 6, rates=[2], pooling=False)
    assert len(no_pool.branches) == 2


def test_timm_layer_kwargs_resnet_and_fused_norm_act() -> None:
    timm = pytest.importorskip("timm")
    from visionkit.layers import timm_layer_kwargs

    kw = timm_layer_kwargs("gn", "hswish")
    m = timm.create_model("test_resnet", num_classes=0, **kw)
    types = {type(x).__name__ for x in m.modules()}
    assert "GroupNorm" in types and "HardSwish" in types and "BatchNorm2d" not in types
    m = timm.create_model("test_efficientnet", num_classes=0, **kw)
    types = {type(x).__name__ for x in m.modules()}
    assert "GroupNorm" in types and "BatchNormAct2d" not in types
    assert m(torch.randn(1, 3, 32, 32)).shape[0] == 1
    with pytest.raises(ConfigError, match="channel"):
        timm_layer_kwargs(None, "crelu")


def test_aspp_pooling_branch_equals_bn_on_pooled_features() -> None:
    """Normalising after upsampling gives BatchNorm's statistics of the pooled 1x1 map."""
    torch.manual_seed(0)
    m = LAYERS.build("aspp", 3, 4, rates=[2])
    branch = m.branches[-1]
    x = torch.randn(3, 3, 5, 6)
    pooled = branch.conv(x.mean((2, 3), keepdim=True))
    ref = torch.relu(nn.functional.batch_norm(pooled, None, None, branch.norm.weight, branch.norm.bias, training=True))  # fmt: skip
    torch.testing.assert_close(branch(x), ref.expand(-1, -1, 5, 6))
    assert m(torch.randn(1, 3, 5, 6)).shape == (1, 4, 5, 6)  # batch of one trains
