"""SegNet's pair: the ``maxpool`` layer (LAYERS) that records where each maximum came from, and
the ``unpool`` upsampler (UPSAMPLERS) that puts values back there."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
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

    ``forward`` returns the pooled tensor (NCHW, like every layer) and keeps ``last_indices`` and
    ``last_input_size`` until the next call. The decoder's ``unpool`` is built with
    ``pool=<this module>`` and reads them, so the encoder-decoder pairing is explicit in the
    model's constructor; ``UPSAMPLERS['unpool'](..., pool=None)`` also accepts the indices
    directly in ``forward(x, indices, output_size)``. ``in_channels`` must equal ``out_channels``.
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
        self.last_indices: torch.Tensor | None = None
        self.last_input_size: torch.Size | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, indices = F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=True,
        )  # fmt: skip
        self.last_indices, self.last_input_size = indices, x.shape
        return out


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
