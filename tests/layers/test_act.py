"""Activations: values at known points against their formulas, gradcheck in float64."""

from __future__ import annotations

import pytest
import torch

import visionkit.layers  # noqa: F401
from visionkit.layers import channel_multiplier
from visionkit.registries import ACTIVATIONS

POINTS = torch.tensor([-5.0, -3.5, -1.0, -0.25, 0.0, 0.5, 1.0, 2.5, 4.0, 7.0], dtype=torch.float64)

FORMULAS = {
    "sigmoid": lambda x: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "relu": lambda x: torch.where(x > 0, x, 0.0),
    "relu6": lambda x: x.clamp(0, 6),
    "hsigmoid": lambda x: (x + 3).clamp(0, 6) / 6,
    "hswish": lambda x: x * (x + 3).clamp(0, 6) / 6,
    "swish": lambda x: x / (1 + torch.exp(-x)),
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "elu": lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
    "mish": lambda x: x * torch.tanh(torch.log1p(torch.exp(x))),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2**0.5)),
    "prelu": lambda x: torch.where(x > 0, x, 0.25 * x),
    "identity": lambda x: x,
}
KNOWN = {  # a few exact values from the definitions
    "hswish": [(-3.0, 0.0), (3.0, 3.0), (1.0, 4 / 6), (-1.0, -2 / 6)],
    "hsigmoid": [(-3.0, 0.0), (3.0, 1.0), (0.0, 0.5)],
    "relu6": [(-1.0, 0.0), (6.5, 6.0), (2.0, 2.0)],
    "swish": [(0.0, 0.0)],
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_values_match_formula(name: str) -> None:
    m = ACTIVATIONS.build(name).double()
    torch.testing.assert_close(m(POINTS.view(1, -1, 1, 1)).flatten(), FORMULAS[name](POINTS))


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_points(name: str) -> None:
    m = ACTIVATIONS.build(name).double()
    for x, y in KNOWN[name]:
        assert m(torch.tensor([[[[x]]]], dtype=torch.float64)).item() == pytest.approx(y, abs=1e-12)


def test_crelu_doubles_channels() -> None:
    m = ACTIVATIONS.build("crelu")
    assert channel_multiplier(m) == 2 and channel_multiplier(type(m)) == 2
    x = torch.randn(2, 3, 4, 4)
    y = m(x)
    torch.testing.assert_close(y, torch.cat([x.clamp(min=0), (-x).clamp(min=0)], 1))
    assert channel_multiplier(ACTIVATIONS.build("relu")) == 1


@pytest.mark.parametrize("beta", [0.5, 2.0])
def test_swish_beta_and_learnable(beta: float) -> None:
    x = POINTS.view(1, -1, 1, 1)
    fixed = ACTIVATIONS.build({"name": "swish", "beta": beta}).double()
    torch.testing.assert_close(fixed(x), x * torch.sigmoid(beta * x))
    assert list(fixed.parameters()) == []
    learn = ACTIVATIONS.build({"name": "swish", "beta": beta, "learnable": True}).double()
    torch.testing.assert_close(learn(x), x * torch.sigmoid(beta * x))
    learn(x).sum().backward()
    assert learn.beta.grad is not None and learn.beta.grad != 0


# Points away from kinks (finite differences are meaningless exactly at -3, 0, 3, 6).
SMOOTH = torch.tensor([-4.1, -2.7, -1.3, -0.4, 0.3, 1.7, 2.2, 3.6, 5.1], dtype=torch.float64)


@pytest.mark.parametrize("spec", ["crelu", "swish", {"name": "swish", "beta": 1.7, "learnable": True}, "hsigmoid", "hswish"])  # fmt: skip
def test_gradcheck_custom(spec) -> None:
    m = ACTIVATIONS.build(spec).double()
    x = SMOOTH.view(1, -1, 1, 1).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6)
