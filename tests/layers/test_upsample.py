"""Upsamplers: transposed-conv sizes (FCN-32s), interpolation chosen by rank, pixel shuffle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import visionkit.layers  # noqa: F401
from visionkit.analysis import transposed_output_size
from visionkit.registries import UPSAMPLERS


def test_fcn32s_transposed_7_to_224() -> None:
    assert transposed_output_size(7, 64, 32, 16) == 224
    explicit = UPSAMPLERS.build("transposed", 2, 3, 32, kernel_size=64, stride=32, padding=16)
    assert explicit(torch.zeros(1, 2, 7, 7)).shape == (1, 3, 224, 224)
    assert UPSAMPLERS.build("transposed", 2, 3, 32).kernel_size == (64, 64)


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 8])
def test_transposed_defaults_give_exact_scale(s: int) -> None:
    m = UPSAMPLERS.build("transposed", 1, 1, s)
    for i in (1, 4, 7):
        assert m(torch.zeros(1, 1, i, i)).shape[-1] == i * s
        assert transposed_output_size(i, m.kernel_size[0], s, m.padding[0]) == i * s


@pytest.mark.parametrize("i,k,s,p,op", [(5, 3, 2, 1, 1), (4, 4, 2, 1, 0), (3, 5, 3, 0, 2)])
def test_transposed_output_size_formula(i: int, k: int, s: int, p: int, op: int) -> None:
    m = torch.nn.ConvTranspose2d(1, 1, k, s, p, op)
    assert m(torch.zeros(1, 1, i, i)).shape[-1] == transposed_output_size(i, k, s, p, op)


@pytest.mark.parametrize("name", ["linear", "bilinear", "trilinear"])
def test_linear_modes_follow_input_rank(name: str) -> None:
    m = UPSAMPLERS.build({"name": name, "align_corners": True}, 2, 2, 2)
    for shape, mode in (((1, 2, 5), "linear"), ((1, 2, 5, 4), "bilinear"), ((1, 2, 3, 4, 5), "trilinear")):  # fmt: skip
        x = torch.randn(*shape)
        torch.testing.assert_close(m(x), F.interpolate(x, scale_factor=2, mode=mode, align_corners=True))  # fmt: skip


def test_nearest_and_projection() -> None:
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(UPSAMPLERS.build("nearest", 2, 2, 3)(x), x.repeat_interleave(3, -1).repeat_interleave(3, -2))  # fmt: skip
    assert UPSAMPLERS.build("nearest", 2, 5, 2)(x).shape == (1, 5, 6, 6)


def test_pixel_shuffle_rearranges_channels() -> None:
    m = UPSAMPLERS.build("pixel_shuffle", 4, 3, 2)
    assert m[0].out_channels == 12 and m(torch.randn(1, 4, 5, 5)).shape == (1, 3, 10, 10)
