"""Convolutions: named paddings over a grid, dilation, dwsep parameter ratio, asymmetric kernels."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
import torch
from torch import nn

import visionkit.layers  # noqa: F401
from visionkit.analysis import conv_output_size
from visionkit.errors import ConfigError
from visionkit.registries import LAYERS

GRID = list(itertools.product([5, 8, 13], [1, 2, 3, 4], [1, 2, 3], [1, 2]))  # i, k, s, d


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def _expected(padding: str, n: int, k: int, s: int, d: int) -> int:
    if padding == "same":
        return math.ceil(n / s)
    return conv_output_size(n, k, s, 0 if padding == "valid" else d * (k - 1), d)


@pytest.mark.parametrize("padding", ["same", "valid", "full"])
def test_named_padding_sizes_over_grid(padding: str) -> None:
    for i, k, s, d in GRID:
        if padding == "valid" and d * (k - 1) + 1 > i:
            continue
        conv = LAYERS.build("conv", 1, 1, kernel_size=k, stride=s, padding=padding, dilation=d)
        got = conv(torch.zeros(1, 1, i, i + 1)).shape[-2:]
        assert tuple(got) == (_expected(padding, i, k, s, d), _expected(padding, i + 1, k, s, d))


def test_full_and_valid_at_stride_one() -> None:
    x = torch.zeros(1, 1, 10, 10)
    for k in (1, 2, 3, 5):
        assert LAYERS.build("conv", 1, 1, kernel_size=k, padding="full")(x).shape[-1] == 10 + k - 1
        assert LAYERS.build("conv", 1, 1, kernel_size=k, padding="valid")(x).shape[-1] == 10 - k + 1


def test_same_even_kernel_matches_tensorflow_padding() -> None:
    """Even kernels pad the extra pixel at the bottom/right (TensorFlow 'SAME')."""
    torch.manual_seed(0)
    conv = LAYERS.build("conv", 2, 3, kernel_size=4, stride=2, padding="same")
    x = torch.randn(1, 2, 7, 7)
    total = (math.ceil(7 / 2) - 1) * 2 + 4 - 7  # 3: 1 before, 2 after
    ref = nn.functional.conv2d(nn.functional.pad(x, [1, 2, 1, 2]), conv.weight, conv.bias, 2)
    assert total == 3
    torch.testing.assert_close(conv(x), ref)


def test_int_padding_and_bad_padding() -> None:
    assert LAYERS.build("conv", 1, 1, kernel_size=3, padding=2)(torch.zeros(1, 1, 6, 6)).shape[-1] == 8  # fmt: skip
    with pytest.raises(ConfigError, match="padding"):
        LAYERS.build("conv", 1, 1, padding="half")
    with pytest.raises(ConfigError, match="groups=3"):
        LAYERS.build("conv", 4, 6, groups=3)


@pytest.mark.parametrize("rate", [1, 2, 3, 4])
def test_dilated_effective_kernel(rate: int) -> None:
    k = 3
    conv = LAYERS.build("dilated", 1, 1, kernel_size=k, dilation=rate, padding="valid")
    assert conv(torch.zeros(1, 1, 20, 20)).shape[-1] == 20 - (rate * (k - 1) + 1) + 1
    assert conv.weight.shape[-2:] == (k, k)  # same parameters as the undilated conv


@pytest.mark.parametrize("c_in,n,k", [(3, 8, 3), (16, 32, 3), (8, 5, 5), (4, 4, 7)])
def test_dwsep_parameter_ratio_is_exact(c_in: int, n: int, k: int) -> None:
    dw = LAYERS.build("dwsep", c_in, n, kernel_size=k, bias=False)
    std = LAYERS.build("conv", c_in, n, kernel_size=k, bias=False)
    assert Fraction(_params(dw), _params(std)) == Fraction(1, n) + Fraction(1, k * k)


def test_dwsep_is_depthwise_then_pointwise() -> None:
    torch.manual_seed(0)
    m = LAYERS.build("dwsep", 3, 5, bias=False)
    x = torch.randn(2, 3, 6, 6)
    dw = nn.functional.conv2d(x, m.depthwise.weight, padding=1, groups=3)
    torch.testing.assert_close(m(x), nn.functional.conv2d(dw, m.pointwise.weight))


def test_dwsep_crelu_between_doubles_pointwise_input() -> None:
    m = LAYERS.build("dwsep", 3, 5, dw_norm="bn", dw_act="crelu")
    assert m.pointwise.in_channels == 6 and m(torch.randn(2, 3, 4, 4)).shape == (2, 5, 4, 4)


@pytest.mark.parametrize("mode", ["parallel", "sequential"])
def test_asym_shapes_and_fewer_parameters(mode: str) -> None:
    k, c = 5, 8
    m = LAYERS.build("asym", c, c, kernel_size=k, mode=mode, bias=False)
    assert m(torch.randn(1, c, 9, 11)).shape == (1, c, 9, 11)
    want = {"parallel": c * c * k, "sequential": 2 * c * c * k}[mode]
    assert _params(m) == want < c * c * k * k


def test_asym_sequential_is_separable_filter() -> None:
    """k x 1 then 1 x k equals one k x k conv with the outer-product kernel (1 channel)."""
    torch.manual_seed(0)
    m = LAYERS.build("asym", 1, 1, kernel_size=3, mode="sequential", bias=False, padding="valid")
    x = torch.randn(1, 1, 8, 8)
    kk = m.a.weight.view(3, 1) @ m.b.weight.view(1, 3)
    torch.testing.assert_close(m(x), nn.functional.conv2d(x, kk.view(1, 1, 3, 3)))
    with pytest.raises(ConfigError, match="same"):
        LAYERS.build("asym", 2, 2, padding="valid", mode="parallel")
