"""UPSAMPLERS ``(in_channels, out_channels, scale_factor, **kw)``: nearest, linear/bilinear/trilinear,
transposed, pixel_shuffle; ``unpool`` (paired with the ``maxpool`` layer) is in :mod:`visionkit.layers.pool`.

Interpolating upsamplers add a 1x1 projection only when ``in_channels != out_channels``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.conv import Conv2d
from visionkit.registries import UPSAMPLERS

_LINEAR_BY_RANK = {3: "linear", 4: "bilinear", 5: "trilinear"}


def _positive_int(v: Any, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{what} must be a positive int, got {v!r}")
    return v


class Interpolate(nn.Module):
    """``F.interpolate`` by ``scale_factor``; ``mode='linear'`` picks linear, bilinear or trilinear
    from the input rank (3, 4, 5). A 1x1 conv maps channels when they differ (NCHW only).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale_factor: float = 2,
        mode: str = "nearest",
        align_corners: bool | None = None,
    ) -> None:
        super().__init__()
        if mode == "nearest" and align_corners:
            raise ConfigError("align_corners only applies to linear modes, not 'nearest'")
        self.scale_factor, self.mode, self.align_corners = float(scale_factor), mode, align_corners
        self.proj = Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.mode
        if mode == "linear":
            if x.dim() not in _LINEAR_BY_RANK:
                raise ConfigError(f"linear upsampling needs a 3-, 4- or 5-D input, got {x.dim()}-D")
            mode = _LINEAR_BY_RANK[x.dim()]
        y = F.interpolate(x, scale_factor=self.scale_factor, mode=mode, align_corners=self.align_corners)  # fmt: skip
        return self.proj(y) if self.proj is not None else y

    def extra_repr(self) -> str:
        return f"scale_factor={self.scale_factor}, mode={self.mode!r}, align_corners={self.align_corners}"  # fmt: skip


@UPSAMPLERS.register("nearest")
def nearest(in_channels: int, out_channels: int, scale_factor: float = 2) -> Interpolate:
    """Nearest-neighbour upsampling."""
    return Interpolate(in_channels, out_channels, scale_factor, "nearest")


def linear(in_channels: int, out_channels: int, scale_factor: float = 2, align_corners: bool | None = False) -> Interpolate:  # fmt: skip
    """(Bi/tri)linear interpolation, chosen by input rank."""
    return Interpolate(in_channels, out_channels, scale_factor, "linear", align_corners)


for _name in ("linear", "bilinear", "trilinear"):
    UPSAMPLERS.register(linear, name=_name)


def transposed_defaults(scale_factor: int) -> tuple[int, int]:
    """(kernel, padding) making a stride-s transposed conv output exactly i*s (k=2s, p=s/2 for even s)."""
    k = 2 * scale_factor - scale_factor % 2
    return k, (k - scale_factor) // 2


@UPSAMPLERS.register("transposed", aliases=("deconv",))
class TransposedConv(nn.ConvTranspose2d):
    """Learned upsampling; output (i-1)*s - 2p + k + output_padding. Defaults: s=scale_factor and
    (k, p) from ``transposed_defaults`` so the output is i*s (FCN-32s: s=32, k=64, p=16: 7 -> 224).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        scale_factor: int = 2,
        kernel_size: int | None = None,
        stride: int | None = None,
        padding: int | None = None,
        output_padding: int = 0,
        bias: bool = True,
    ) -> None:
        s = _positive_int(stride if stride is not None else scale_factor, "stride")
        k_default, p_default = transposed_defaults(s)
        k = kernel_size if kernel_size is not None else k_default
        p = padding if padding is not None else (p_default if kernel_size is None else 0)
        super().__init__(in_channels, out_channels, k, s, p, output_padding, bias=bias)


@UPSAMPLERS.register("pixel_shuffle", aliases=("subpixel",))
class PixelShuffleUp(nn.Sequential):
    """Sub-pixel convolution (ESPCN): a k x k conv to out*r^2 channels, then PixelShuffle(r)."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: int = 2, kernel_size: int = 3) -> None:  # fmt: skip
        r = _positive_int(scale_factor, "scale_factor")
        super().__init__(Conv2d(in_channels, out_channels * r * r, kernel_size), nn.PixelShuffle(r))
        self.out_channels = out_channels
