"""Convolutions: ``conv`` (named paddings), ``dwsep``, ``dilated``, ``asym``, and padding helpers.

Every LAYERS entry takes ``(in_channels, out_channels, **kw)`` and exposes ``out_channels``.
Padding is an int (each side), ``valid`` (0), ``same`` (output ceil(i/s), dilation-aware; padded
dynamically, TensorFlow-style, when the effective kernel is even) or ``full`` (d*(k-1) each side).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.registries import LAYERS

PADDINGS = ("valid", "same", "full")

IntOrPair = int | tuple[int, int]


def _pair(v: Any, what: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return (int(v[0]), int(v[1]))
    raise ConfigError(f"{what} must be an int or a pair of ints, got {v!r}")


def same_padding_total(i: int, k: int, s: int = 1, d: int = 1) -> int:
    """Total padding (both sides) that makes a conv output ceil(i/s) elements."""
    return max((math.ceil(i / s) - 1) * s + d * (k - 1) + 1 - i, 0)


def static_padding(padding: Any, kernel_size: IntOrPair, dilation: IntOrPair = 1) -> tuple[int, int] | None:  # fmt: skip
    """Symmetric per-side padding for ``padding``, or None when ``same`` needs dynamic padding.

    ``same`` is static exactly when every effective kernel d*(k-1)+1 is odd: then d*(k-1)/2 per
    side gives ceil(i/s) for any stride.
    """
    k, d = _pair(kernel_size, "kernel_size"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if padding == "full":
            return (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
        if padding == "same":
            if any(dd * (kk - 1) % 2 for kk, dd in zip(k, d, strict=True)):
                return None
            return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
        raise ConfigError(f"padding must be an int, a pair or one of {PADDINGS}, got {padding!r}")
    p = _pair(padding, "padding")
    if min(p) < 0:
        raise ConfigError(f"padding must be >= 0, got {padding!r}")
    return p


@LAYERS.register("conv")
class Conv2d(nn.Conv2d):
    """A standard 2-D convolution (LAYERS ``conv``): ``nn.Conv2d`` accepting ``padding`` int | pair
    | 'valid' | 'same' | 'full'.

    ``same`` with an even effective kernel pads asymmetrically at run time (extra pixel at the
    bottom/right, as TensorFlow does), so the output is always ceil(i/s).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: Any = "same",
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> None:
        _check_channels(in_channels, out_channels, groups)
        pad = static_padding(padding, kernel_size, dilation)
        self.dynamic_same = pad is None
        super().__init__(
            in_channels, out_channels, _pair(kernel_size, "kernel_size"),
            _pair(stride, "stride"), pad if pad is not None else 0,
            _pair(dilation, "dilation"), groups, bias,
        )  # fmt: skip
        self.padding_spec = padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dynamic_same:
            ih, iw = x.shape[-2:]
            ph = same_padding_total(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
            pw = same_padding_total(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return super().forward(x)


def _check_channels(in_channels: int, out_channels: int, groups: int = 1) -> None:
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):  # fmt: skip
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{name} must be a positive int, got {v!r}")
    if in_channels % groups or out_channels % groups:
        raise ConfigError(
            f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
        )


@LAYERS.register("dilated", aliases=("atrous",))
class DilatedConv2d(Conv2d):
    """Atrous convolution (LAYERS ``dilated``): ``Conv2d`` with ``dilation`` defaulting to rate 2;
    the effective kernel is r*(k-1)+1, same params."""

    __init__ = functools.partialmethod(Conv2d.__init__, dilation=2)


@LAYERS.register("dwsep", aliases=("depthwise_separable",))
class DepthwiseSeparable(nn.Module):
    """MobileNet's depthwise-separable conv: k x k depthwise (groups=in) then 1x1 pointwise.

    ``dw_norm``/``dw_act`` (NORMS/ACTIVATIONS specs, optional) go between the two convs; without
    bias the parameter count is (k*k + N) * C_in, i.e. 1/N + 1/(k*k) of a standard conv's.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: Any = "same",
        dilation: IntOrPair = 1,
        bias: bool = True,
        dw_norm: Any = None,
        dw_act: Any = None,
    ) -> None:
        super().__init__()
        from visionkit.layers.act import channel_multiplier
        from visionkit.registries import ACTIVATIONS, NORMS

        self.depthwise = Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation,
            groups=in_channels, bias=bias and dw_norm is None,
        )  # fmt: skip
        self.dw_norm = NORMS.build(dw_norm, in_channels) if dw_norm is not None else nn.Identity()
        self.dw_act = ACTIVATIONS.build(dw_act) if dw_act is not None else nn.Identity()
        mid = in_channels * channel_multiplier(self.dw_act)
        self.pointwise = Conv2d(mid, out_channels, 1, bias=bias)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.dw_act(self.dw_norm(self.depthwise(x))))


@LAYERS.register("asym", aliases=("asymmetric",))
class AsymmetricConv(nn.Module):
    """A k x k conv replaced by 1 x k and k x 1 convs: ``parallel`` branches concatenated
    (out/2 channels each, Inception-v3 style) or ``sequential`` k x 1 -> 1 x k (fewer params).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Any = "same",
        dilation: int = 1,
        bias: bool = True,
        mode: str = "parallel",
    ) -> None:
        super().__init__()
        k, s, d = kernel_size, stride, dilation
        if mode == "parallel":
            if padding != "same":
                raise ConfigError(
                    f"asym(mode=parallel) concatenates a 1x{k} and a {k}x1 branch, whose sizes only "
                    f"agree with padding='same'; got padding={padding!r} (use mode=sequential)"
                )
            if out_channels < 2:
                raise ConfigError(f"asym(mode=parallel) needs out_channels >= 2, got {out_channels}")  # fmt: skip
            half = out_channels // 2
            self.a = Conv2d(in_channels, half, (1, k), s, _one_side(padding, k, d, 1), (1, d), bias=bias)  # fmt: skip
            self.b = Conv2d(in_channels, out_channels - half, (k, 1), s, _one_side(padding, k, d, 0), (d, 1), bias=bias)  # fmt: skip
        elif mode == "sequential":
            self.a = Conv2d(in_channels, out_channels, (k, 1), (s, 1), _one_side(padding, k, d, 0), (d, 1), bias=bias)  # fmt: skip
            self.b = Conv2d(out_channels, out_channels, (1, k), (1, s), _one_side(padding, k, d, 1), (1, d), bias=bias)  # fmt: skip
        else:
            raise ConfigError(f"asym: mode must be 'parallel' or 'sequential', got {mode!r}")
        self.mode = mode
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "parallel":
            return torch.cat([self.a(x), self.b(x)], dim=1)
        return self.b(self.a(x))


def _one_side(padding: Any, k: int, d: int, axis: int) -> Any:
    """Padding for a 1-D kernel along ``axis`` (0 = H, 1 = W) so both branches get the same size."""
    if padding == "same":
        return padding
    p = static_padding(padding, k, d) or (0, 0)  # None only for 'same', handled above
    return (p[0], 0) if axis == 0 else (0, p[1])
