"""ACTIVATIONS ``(**kw) -> nn.Module``.

An activation that changes the channel count declares it with the class attribute
``channel_multiplier`` (CReLU: 2); builders read it through ``channel_multiplier(module)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.registries import ACTIVATIONS

# torch's own modules, registered under our names (their keyword arguments pass through).
for _name, _cls, _aliases in (
    ("sigmoid", nn.Sigmoid, ()),
    ("tanh", nn.Tanh, ()),
    ("relu", nn.ReLU, ()),
    ("relu6", nn.ReLU6, ()),
    ("leaky_relu", nn.LeakyReLU, ("lrelu",)),
    ("prelu", nn.PReLU, ()),
    ("elu", nn.ELU, ()),
    ("gelu", nn.GELU, ()),
    ("mish", nn.Mish, ()),
    ("identity", nn.Identity, ("linear",)),
):
    ACTIVATIONS.register(_cls, name=_name, aliases=_aliases)


@ACTIVATIONS.register("crelu")
class CReLU(nn.Module):
    """Concatenated ReLU: cat[ReLU(x), ReLU(-x)] along channels (doubles them, dim 1)."""

    channel_multiplier = 2

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([F.relu(x), F.relu(-x)], dim=1)


@ACTIVATIONS.register("swish", aliases=("silu",))
class Swish(nn.Module):
    """Swish: x * sigmoid(beta * x); beta=1 is SiLU, ``learnable=True`` makes beta a parameter."""

    def __init__(self, beta: float = 1.0, learnable: bool = False, inplace: bool = False) -> None:
        super().__init__()
        self.learnable = learnable
        if learnable:
            self.beta = nn.Parameter(torch.tensor(float(beta)))
        else:
            self.register_buffer("beta", torch.tensor(float(beta)), persistent=False)
            self._plain = float(beta) == 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learnable and self._plain:
            return F.silu(x)
        return x * torch.sigmoid(self.beta.to(x.dtype) * x)


@ACTIVATIONS.register("hsigmoid", aliases=("hard_sigmoid",))
class HardSigmoid(nn.Module):
    """Hard sigmoid: ReLU6(x + 3) / 6 (MobileNetV3)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


@ACTIVATIONS.register("hswish", aliases=("hard_swish",))
class HardSwish(nn.Module):
    """Hard swish: x * ReLU6(x + 3) / 6 (MobileNetV3); torch's fused kernel computes it."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x)


def channel_multiplier(act: object) -> int:
    """How many times ``act`` (a module or class) multiplies channels: its ``channel_multiplier``."""
    return int(getattr(act, "channel_multiplier", 1)) if act is not None else 1
