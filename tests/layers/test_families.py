"""Every entry of LAYERS, NORMS, ACTIVATIONS and UPSAMPLERS: build, forward, backward, shape, dtype.

Parametrised over the registries after loading plugins, so new entries are tested automatically.
"""

from __future__ import annotations

import pytest
import torch

from visionkit.layers import channel_multiplier
from visionkit.plugins import load_all
from visionkit.registries import ACTIVATIONS, LAYERS, NORMS, UPSAMPLERS

load_all()

# Entries that keep the channel count by definition are built with in == out.
SAME_CHANNELS_LAYERS = {"maxpool"}
# Spatial reduction of each layer at its defaults (all others keep H, W).
LAYER_REDUCTION = {"maxpool": 2}


def _backward_ok(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    y.float().square().mean().backward()
    params = [p for p in module.parameters() if p.requires_grad]
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert any(p.grad is not None for p in params) or not params


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", LAYERS.names())
def test_layer_entry(name: str, dtype: torch.dtype) -> None:
    c_in, c_out = (6, 6) if name in SAME_CHANNELS_LAYERS else (4, 8)
    torch.manual_seed(0)
    m = LAYERS.build(name, c_in, c_out).to(dtype)
    x = torch.randn(2, c_in, 12, 12, dtype=dtype, requires_grad=True)
    y = m(x)
    r = LAYER_REDUCTION.get(name, 1)
    expected_c = getattr(m, "out_channels", c_out)
    assert expected_c % c_out == 0  # out_channels times an activation's multiplier
    assert y.shape == (2, expected_c, 12 // r, 12 // r) and y.dtype == dtype
    _backward_ok(m, x, y)
    m.eval()
    with torch.no_grad():
        assert m(x[:1]).shape == (1, expected_c, 12 // r, 12 // r)


@pytest.mark.parametrize("name", NORMS.names())
def test_norm_entry(name: str) -> None:
    for dtype in (torch.float32, torch.float64):
        m = NORMS.build(name, 6).to(dtype)
        x = torch.randn(3, 6, 5, 4, dtype=dtype, requires_grad=True)
        y = m(x)
        assert y.shape == x.shape and y.dtype == dtype
        _backward_ok(m, x, y)
        m.eval()
        with torch.no_grad():
            assert m(x).shape == x.shape


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_activation_entry(name: str) -> None:
    for dtype in (torch.float32, torch.float64):
        m = ACTIVATIONS.build(name).to(dtype)
        x = torch.randn(2, 3, 4, 5, dtype=dtype, requires_grad=True)
        y = m(x)
        assert y.shape == (2, 3 * channel_multiplier(m), 4, 5) and y.dtype == dtype
        _backward_ok(m, x, y)


def _upsampler_context(name: str, c: int) -> tuple[dict, torch.nn.Module | None]:
    """``unpool`` consumes the indices of a paired ``maxpool``: build and run that pool first."""
    if name in ("unpool",):
        pool = LAYERS.build("maxpool", c, c)
        return {"pool": pool}, pool
    return {}, None


@pytest.mark.parametrize("name", UPSAMPLERS.names())
def test_upsampler_entry(name: str) -> None:
    kw, pool = _upsampler_context(name, 4)
    c_out = 4 if pool is not None else 6
    m = UPSAMPLERS.build(name, 4, c_out, 2, **kw)
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    if pool is not None:
        x_in = torch.randn(2, 4, 14, 12)
        x = pool(x_in).detach().requires_grad_(True)
    y = m(x)
    assert y.shape == (2, c_out, 14, 12) and y.dtype == x.dtype
    _backward_ok(m, x, y)


@pytest.mark.parametrize(
    "norm,act",
    [(n, "relu") for n in NORMS.names()] + [("bn", a) for a in ACTIVATIONS.names()],
)
def test_conv_norm_act_any_norm_and_act(norm: str, act: str) -> None:
    """Every norm and every activation composes; channels follow the activation's multiplier."""
    block = LAYERS.build("conv_norm_act", 3, 4, norm=norm, act=act)
    y = block(torch.randn(2, 3, 6, 6))
    assert y.shape[1] == block.out_channels == 4 * channel_multiplier(ACTIVATIONS.build(act))
