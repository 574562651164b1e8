"""Composite LAYERS: ``conv_norm_act``, ``bottleneck``, ``hdc``, ``aspp`` and the index-recording
``maxpool`` paired with the ``unpool`` upsampler (SegNet).

Norms and activations are specs (a registry name, a ``{name: ..., **kw}`` mapping, a class or a
partial) resolved by ``NORMS.build(spec, channels)`` / ``ACTIVATIONS.build(spec)``; ``None`` means
none. Channel counts follow the activation's ``channel_multiplier`` and every block exposes
``out_channels``.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import reduce
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.act import channel_multiplier
from visionkit.registries import ACTIVATIONS, LAYERS, NORMS


def build_norm(spec: Any, num_channels: int) -> nn.Module | None:
    """A NORMS module for ``spec``, or None for ``None``/``False`` and identity norms (``none``)."""
    if spec is None or spec is False:
        return None
    module = NORMS.build(spec, num_channels)
    return None if isinstance(module, nn.Identity) else module


def build_act(spec: Any) -> nn.Module | None:
    """An ACTIVATIONS module for ``spec``, or None for ``None``/``False``."""
    if spec is None or spec is False:
        return None
    return ACTIVATIONS.build(spec)


def _check_accepts(fn: Callable[..., Any], kwargs: dict[str, Any], what: str) -> None:
    """Refuse keyword arguments a builder cannot take, naming them (instead of a bare TypeError)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature: let the call decide
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{what} does not accept {unknown}; it takes {sorted(params)}")


@LAYERS.register("conv_norm_act", aliases=("cna",))
class ConvNormAct(nn.Sequential):
    """A LAYERS entry (``layer``, default ``conv``) then a norm then an activation, like
    torchvision's ConvNormActivation.

    ``bias=None`` means "bias only without a norm". Every other keyword (``padding``, default
    ``same``; ``dilation``, ``groups``; a layer's own keys) goes to the layer; ``dilation`` and
    ``groups`` of 1 are dropped, so layers without them (``dwsep``) work.
    ``out_channels`` is ``out_channels * channel_multiplier`` of the activation.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any = 3,
        stride: Any = 1,
        *,
        bias: bool | None = None,
        norm: Any = "bn",
        act: Any = "relu",
        layer: Any = "conv",
        **layer_kw: Any,
    ) -> None:
        norm_module = build_norm(norm, out_channels)
        act_module = build_act(act)
        kw = {k: v for k, v in layer_kw.items() if not (k in ("dilation", "groups") and v == 1)}
        kw = {"kernel_size": kernel_size, "stride": stride, "padding": "same", **kw}
        kw["bias"] = norm_module is None if bias is None else bias
        fn, spec_kw = LAYERS.resolve(layer)
        _check_accepts(fn, {**spec_kw, **kw}, f"conv_norm_act: layer {layer!r}")
        modules: OrderedDict[str, nn.Module] = OrderedDict(
            conv=LAYERS.build(layer, in_channels, out_channels, **kw)
        )
        if norm_module is not None:
            modules["norm"] = norm_module
        if act_module is not None:
            modules["act"] = act_module
        super().__init__(modules)
        self.in_channels = in_channels
        self.out_channels = out_channels * channel_multiplier(act_module)


@LAYERS.register("bottleneck")
class Bottleneck(nn.Module):
    """1x1 reduce -> k x k (stride, dilation, groups) -> 1x1 expand, each with a norm; activations
    after the first two (ResNet-style, without the residual sum).

    ``mid_channels`` defaults to ``max(out_channels // reduction, 1)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: Any = "same",
        dilation: int = 1,
        groups: int = 1,
        bias: bool | None = None,
        mid_channels: int | None = None,
        reduction: int = 4,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        super().__init__()
        mid = mid_channels or max(out_channels // reduction, 1)
        self.reduce = ConvNormAct(in_channels, mid, 1, bias=bias, norm=norm, act=act)
        self.conv = ConvNormAct(
            self.reduce.out_channels, mid, kernel_size, stride, padding=padding,
            dilation=dilation, groups=groups, bias=bias, norm=norm, act=act,
        )  # fmt: skip
        self.expand = ConvNormAct(self.conv.out_channels, out_channels, 1, bias=bias, norm=norm, act=None)  # fmt: skip
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.conv(self.reduce(x)))


def check_hdc_rates(rates: Sequence[int], kernel_size: int = 3) -> None:
    """Refuse dilation rates that grid (leave holes in the receptive field), per HDC (Wang et al.).

    Rules: the rates share no common factor > 1; with M_n = r_n and
    M_i = max(M_{i+1} - 2 r_i, M_{i+1} - 2 (M_{i+1} - r_i), r_i), a k x k stack needs M_2 <= k;
    and the first rate is 1 (the rule's assumption: without it [2, 3] passes both yet has holes).
    """
    rates = list(rates)
    if not rates or any(not isinstance(r, int) or r < 1 for r in rates):
        raise ConfigError(f"hdc: rates must be a non-empty list of positive ints, got {rates!r}")
    common = reduce(math.gcd, rates)
    if common > 1:
        raise ConfigError(
            f"hdc: rates {rates} share the common factor {common} and would grid (leave holes in "
            "the receptive field); HDC needs rates with no common factor > 1, e.g. [1, 2, 5]"
        )
    if rates[0] != 1:
        raise ConfigError(
            f"hdc: rates {rates} must start with rate 1: the HDC rule (M_2 <= k) assumes the first "
            "layer sees adjacent pixels, and without it stacks such as [2, 3] or [4, 1] leave holes"
        )
    m = rates[-1]
    for r in reversed(rates[1:-1]):
        m = max(m - 2 * r, m - 2 * (m - r), r)
    if len(rates) > 1 and m > kernel_size:
        raise ConfigError(
            f"hdc: rates {rates} grid with kernel_size={kernel_size}: HDC needs M_2 <= k, where "
            f"M_n = r_n and M_i = max(M_(i+1) - 2 r_i, M_(i+1) - 2 (M_(i+1) - r_i), r_i); "
            f"here M_2 = {m}. Try [1, 2, 5]"
        )


@LAYERS.register("hdc")
class HybridDilatedConv(nn.Sequential):
    """Hybrid dilated convolution: ``conv_norm_act`` blocks at dilation ``rates`` (e.g. 1, 2, 5)
    whose receptive field has no holes; rates that grid raise ConfigError (``check_hdc_rates``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (1, 2, 5),
        kernel_size: int = 3,
        bias: bool | None = None,
        norm: Any = "bn",
        act: Any = "relu",
    ) -> None:
        check_hdc_rates(rates, kernel_size)
        blocks, c = [], in_channels
        for r in rates:
            blocks.append(ConvNormAct(c, out_channels, kernel_size, dilation=r, bias=bias, norm=norm, act=act))  # fmt: skip
            c = blocks[-1].out_channels
        super().__init__(*blocks)
        self.rates = tuple(rates)
        self.out_channels = c


class ASPPPooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv, upsample back, then norm and act.

    The norm runs after upsampling: for BatchNorm the statistics equal those of the 1x1 map (each
    value is repeated H*W times), and a batch of one trains without an error (the branch then
    outputs the norm's bias, as BatchNorm's definition implies).
    """

    def __init__(self, in_channels: int, out_channels: int, norm: Any, act: Any) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        norm_module = build_norm(norm, out_channels)
        self.conv = LAYERS.build("conv", in_channels, out_channels, 1, bias=norm_module is None)
        self.norm = norm_module if norm_module is not None else nn.Identity()
        self.act = build_act(act) or nn.Identity()
        self.out_channels = out_channels * channel_multiplier(self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.interpolate(self.conv(self.pool(x)), size=x.shape[-2:], mode="nearest")
        return self.act(self.norm(y))


@LAYERS.register("aspp")
class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabv3): a 1x1 branch, 3x3 branches at ``rates`` and an
    image-pooling branch, concatenated at the input's size, then projected by a 1x1 conv.

    The pooling branch normalises after upsampling (see ``ASPPPooling``), so batch size 1 works.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        mid_channels: int | None = None,
        pooling: bool = True,
        norm: Any = "bn",
        act: Any = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        branches: list[nn.Module] = [ConvNormAct(in_channels, mid, 1, norm=norm, act=act)]
        branches += [ConvNormAct(in_channels, mid, 3, dilation=r, norm=norm, act=act) for r in rates]  # fmt: skip
        if pooling:
            branches.append(ASPPPooling(in_channels, mid, norm, act))
        self.branches = nn.ModuleList(branches)
        cat = sum(b.out_channels for b in branches)
        self.project = ConvNormAct(cat, out_channels, 1, norm=norm, act=act)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rates = tuple(rates)
        self.out_channels = self.project.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.project(torch.cat([b(x) for b in self.branches], dim=1)))
