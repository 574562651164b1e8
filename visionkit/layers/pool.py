"""SegNet's pair: the ``maxpool`` layer (LAYERS) that records where each maximum came from, and
the ``unpool`` upsampler (UPSAMPLERS) that puts values back there."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.roi_align import exporting
from visionkit.registries import LAYERS, UPSAMPLERS


def same_channels(layer: str, in_channels: int, out_channels: int | None) -> int:
    """``in_channels`` for a layer that keeps the channel count (``maxpool``, ``unpool``); a
    different ``out_channels`` is a ConfigError naming ``layer``."""
    if out_channels is not None and out_channels != in_channels:
        raise ConfigError(
            f"{layer} keeps the channel count: in_channels={in_channels} != out_channels={out_channels}"
        )
    return in_channels


@LAYERS.register("maxpool")
class MaxPool2dWithIndices(nn.MaxPool2d):
    """Max pooling that records where each maximum came from, for a paired ``unpool`` (SegNet).

    ``forward`` returns the pooled tensor (NCHW, like every layer). While ``record_indices`` is
    True it keeps ``last_indices`` and ``last_input_size`` until the next call: the decoder's
    ``unpool`` built with ``pool=<this module>`` sets it and reads them, so the encoder-decoder
    pairing is explicit in the model's constructor (``UPSAMPLERS['unpool'](..., pool=None)`` also
    accepts the indices directly in ``forward(x, indices, output_size)``). An unpaired pool (the
    plain backbones' downsampling) keeps nothing. ``in_channels`` must equal ``out_channels``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        kernel_size: int = 2,
        stride: int | None = None,
        padding: int = 0,
        dilation: int = 1,
        ceil_mode: bool = False,
    ) -> None:
        channels = same_channels("maxpool", in_channels, out_channels)
        super().__init__(kernel_size, stride, padding, dilation, return_indices=False, ceil_mode=ceil_mode)  # fmt: skip
        self.out_channels = channels
        self.record_indices = False  # set by a paired unpool
        self.last_indices: torch.Tensor | None = None
        self.last_input_size: torch.Size | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.record_indices:
            out, indices = F.max_pool2d(
                x, self.kernel_size, self.stride, self.padding, self.dilation,
                ceil_mode=self.ceil_mode, return_indices=True,
            )  # fmt: skip
            self.last_indices, self.last_input_size = indices, x.shape
            return out
        if self._pairwise(x):
            return max_pool_2x2(x)
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, ceil_mode=self.ceil_mode)  # fmt: skip

    def _pairwise(self, x: torch.Tensor) -> bool:
        """Whether :func:`max_pool_2x2` gives this pool's output: a 2x2 window at stride 2 on CPU,
        without autograd (``maximum`` splits a tie's gradient, max_pool gives it to one input)
        and outside an export (an exported graph keeps its MaxPool operator)."""
        two = (2, (2, 2))
        return (
            self.kernel_size in two and self.stride in two and self.padding in (0, (0, 0))
            and self.dilation in (1, (1, 1)) and not self.ceil_mode and x.device.type == "cpu"
            and x.dim() in (3, 4) and min(x.shape[-2:]) >= 2
            and not (x.requires_grad and torch.is_grad_enabled()) and not exporting()
        )  # fmt: skip


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """``F.max_pool2d(x, 2, 2)`` (floor mode; the same values and memory format) as two
    elementwise maxima of strided views: on CPU 2-12x faster than max_pool2d's kernel, which
    computes indices even when none are asked for (channels-last and NCHW, batch 1 and 32)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    rows = torch.maximum(x[..., 0::2, :], x[..., 1::2, :])
    return torch.maximum(rows[..., 0::2], rows[..., 1::2])


@UPSAMPLERS.register("unpool", aliases=("maxunpool",))
class MaxUnpool(nn.Module):
    """Max-unpooling: each value goes back to where its paired ``maxpool`` found it, zeros elsewhere.

    Pass ``pool=`` the encoder's ``maxpool`` layer (``LAYERS['maxpool']``); ``forward(x)`` then reads
    its ``last_indices``/``last_input_size``. The pool is referenced, not owned (no duplicate
    parameters or state). Without a pool, call ``forward(x, indices, output_size)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        scale_factor: int = 2,
        pool: MaxPool2dWithIndices | None = None,
        kernel_size: int | None = None,
        stride: int | None = None,
        padding: int = 0,
    ) -> None:
        super().__init__()
        self.out_channels = same_channels("unpool", in_channels, out_channels)
        if pool is not None and not isinstance(pool, MaxPool2dWithIndices):
            raise ConfigError(f"unpool: pool must be a LAYERS['maxpool'] module, got {type(pool).__name__}")  # fmt: skip
        if pool is not None:
            kernel_size, stride, padding = pool.kernel_size, pool.stride, pool.padding
            pool.record_indices = True
        k = kernel_size if kernel_size is not None else scale_factor
        self.unpool = nn.MaxUnpool2d(k, stride if stride is not None else k, padding)
        self._pool = [pool]  # a list, so the pool is not registered as a second parent's child

    @property
    def pool(self) -> MaxPool2dWithIndices | None:
        return self._pool[0]

    def forward(
        self,
        x: torch.Tensor,
        indices: torch.Tensor | None = None,
        output_size: Any = None,
    ) -> torch.Tensor:
        if indices is None:
            if self.pool is None or self.pool.last_indices is None:
                raise RuntimeError(
                    "unpool has no indices: build it with pool=<its maxpool layer> and run that "
                    "pool first, or call unpool(x, indices, output_size)"
                )
            indices, output_size = self.pool.last_indices, self.pool.last_input_size
        if indices.shape != x.shape:
            raise RuntimeError(f"unpool: input {tuple(x.shape)} does not match its pool's output {tuple(indices.shape)}")  # fmt: skip
        return self.unpool(x, indices, output_size=output_size)
