"""``timm_layer_kwargs``: our NORMS/ACTIVATIONS specs as timm ``norm_layer``/``act_layer`` callables."""

from __future__ import annotations

from typing import Any

from torch import nn

from visionkit.errors import ConfigError
from visionkit.layers.act import channel_multiplier
from visionkit.layers.blocks import build_act, build_norm

_NORM_ACT_KWARGS = ("apply_act", "act_layer", "act_kwargs", "inplace", "drop_layer")


def timm_layer_kwargs(norm: Any = None, act: Any = None) -> dict[str, Any]:
    """``{"norm_layer": fn, "act_layer": fn}`` for the specs given (None ones are left out).

    timm calls ``norm_layer(C)`` for a plain norm (ResNet) and ``norm_layer(C, apply_act=...,
    inplace=...)`` for a fused norm+activation (EfficientNet, MobileNetV3); the second form returns
    our norm followed by our activation. ``inplace`` is a memory hint and is not forwarded.
    Activations that change the channel count (``crelu``) cannot work inside timm and are refused.
    """
    kwargs: dict[str, Any] = {}
    if act is not None:
        probe = build_act(act)
        if channel_multiplier(probe) != 1:
            raise ConfigError(f"timm models need a channel-preserving activation; {act!r} multiplies channels")  # fmt: skip

        def act_layer(*_: Any, **__: Any) -> nn.Module:
            return build_act(act) or nn.Identity()

        kwargs["act_layer"] = act_layer
    if norm is not None:

        def norm_layer(num_features: int, *args: Any, **kw: Any) -> nn.Module:
            module = build_norm(norm, num_features) or nn.Identity()
            if not any(k in kw for k in _NORM_ACT_KWARGS):
                return module  # a plain norm (timm passes eps/momentum defaults; ours apply)
            if not kw.get("apply_act", True):
                return module
            act_spec = act
            if act_spec is None:
                return nn.Sequential(module, _timm_act(kw.get("act_layer")))
            return nn.Sequential(module, build_act(act_spec) or nn.Identity())

        kwargs["norm_layer"] = norm_layer
    return kwargs


def _timm_act(layer: Any) -> nn.Module:
    """timm's own default activation for a fused norm+act when no visionkit act was chosen."""
    if layer is None:
        return nn.ReLU()
    from timm.layers import get_act_layer

    resolved = get_act_layer(layer)
    return resolved() if resolved is not None else nn.Identity()
