"""Each norm against a NumPy computation of its definition, in training and eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import visionkit.layers  # noqa: F401
from visionkit.errors import ConfigError
from visionkit.layers.norm import default_groups
from visionkit.registries import NORMS

EPS = 1e-5


def _x(seed: int = 0, shape=(4, 6, 5, 3)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 1


def _affine(m: torch.nn.Module, c: int) -> tuple[np.ndarray, np.ndarray]:
    g = torch.Generator().manual_seed(1)
    w, b = torch.rand(c, generator=g, dtype=torch.float64) + 0.5, torch.randn(c, generator=g, dtype=torch.float64)  # fmt: skip
    with torch.no_grad():
        m.weight.copy_(w)
        m.bias.copy_(b)
    return w.numpy().reshape(1, c, 1, 1), b.numpy().reshape(1, c, 1, 1)


def _normalise(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def test_bn_train_and_eval() -> None:
    x = _x()
    m = NORMS.build("bn", 6).double()
    w, b = _affine(m, 6)
    xn = x.numpy()
    np.testing.assert_allclose(m(x).detach().numpy(), _normalise(xn, (0, 2, 3)) * w + b, atol=1e-10)  # fmt: skip
    run_mean = 0.1 * xn.mean(axis=(0, 2, 3))
    run_var = 0.9 + 0.1 * xn.var(axis=(0, 2, 3), ddof=1)
    m.eval()
    want = (xn - run_mean.reshape(1, 6, 1, 1)) / np.sqrt(run_var.reshape(1, 6, 1, 1) + EPS) * w + b
    np.testing.assert_allclose(m(x).detach().numpy(), want, atol=1e-10)


@pytest.mark.parametrize("name,axes", [("ln", (1, 2, 3)), ("in", (2, 3))])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_ln_and_in(name: str, axes: tuple[int, ...], mode: str) -> None:
    x = _x()
    m = NORMS.build(name, 6).double().train(mode == "train")
    w, b = _affine(m, 6)
    np.testing.assert_allclose(m(x).detach().numpy(), _normalise(x.numpy(), axes) * w + b, atol=1e-10)  # fmt: skip


@pytest.mark.parametrize("groups", [None, 3, 1, 6])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_gn(groups: int | None, mode: str) -> None:
    x = _x()
    kw = {} if groups is None else {"num_groups": groups}
    m = NORMS.build({"name": "gn", **kw}, 6).double().train(mode == "train")
    g = groups or default_groups(6)
    assert m.num_groups == g
    w, b = _affine(m, 6)
    xn = x.numpy().reshape(4, g, 6 // g, 5, 3)
    want = _normalise(xn, (2, 3, 4)).reshape(4, 6, 5, 3) * w + b
    np.testing.assert_allclose(m(x).detach().numpy(), want, atol=1e-10)


@pytest.mark.parametrize("c,g", [(64, 32), (48, 16), (24, 8), (12, 4), (6, 2), (3, 1), (7, 1), (96, 32)])  # fmt: skip
def test_gn_default_groups(c: int, g: int) -> None:
    assert default_groups(c) == g
    assert NORMS.build("gn", c).num_groups == g


def test_gn_refuses_non_dividing_groups() -> None:
    with pytest.raises(ConfigError, match=r"num_groups=4 .*num_channels=6"):
        NORMS.build({"name": "gn", "num_groups": 4}, 6)


def _sn_oracle(xn, wm, wv, mean_bn=None, var_bn=None):
    mean_in, var_in = xn.mean(axis=(2, 3), keepdims=True), xn.var(axis=(2, 3), keepdims=True)
    mean_ln, var_ln = xn.mean(axis=(1, 2, 3), keepdims=True), xn.var(axis=(1, 2, 3), keepdims=True)
    if mean_bn is None:
        mean_bn, var_bn = xn.mean(axis=(0, 2, 3), keepdims=True), xn.var(axis=(0, 2, 3), keepdims=True)  # fmt: skip
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    return (xn - mean) / np.sqrt(var + EPS)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max())
    return e / e.sum()


def test_switchable_norm_weighted_formula_train_and_eval() -> None:
    x = _x()
    m = NORMS.build({"name": "sn", "momentum": 0.2}, 6).double()
    w, b = _affine(m, 6)
    lm, lv = np.array([0.3, -1.0, 2.0]), np.array([1.5, 0.2, -0.7])
    with torch.no_grad():
        m.mean_weight.copy_(torch.from_numpy(lm))
        m.var_weight.copy_(torch.from_numpy(lv))
    xn = x.numpy()
    wm, wv = _softmax(lm), _softmax(lv)
    np.testing.assert_allclose(m(x).detach().numpy(), _sn_oracle(xn, wm, wv) * w + b, atol=1e-10)  # fmt: skip
    run_mean = 0.2 * xn.mean(axis=(0, 2, 3))
    run_var = 0.8 + 0.2 * xn.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(m.running_mean.numpy(), run_mean, atol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), run_var, atol=1e-12)
    m.eval()
    x2 = _x(seed=3)
    want = _sn_oracle(x2.numpy(), wm, wv, run_mean.reshape(1, 6, 1, 1), run_var.reshape(1, 6, 1, 1))  # fmt: skip
    np.testing.assert_allclose(m(x2).detach().numpy(), want * w + b, atol=1e-10)


@pytest.mark.parametrize("which,name,axes", [(0, "in", (2, 3)), (1, "ln", (1, 2, 3)), (2, "bn", (0, 2, 3))])  # fmt: skip
def test_switchable_norm_one_hot_equals_each_norm(which: int, name: str, axes) -> None:
    """Saturated weights pick one of IN, LN, BN (order of the logits)."""
    m = NORMS.build("sn", 6).double()
    logits = torch.full((3,), -50.0, dtype=torch.float64)
    logits[which] = 50.0
    with torch.no_grad():
        m.mean_weight.copy_(logits)
        m.var_weight.copy_(logits)
    x = _x()
    np.testing.assert_allclose(m(x).detach().numpy(), _normalise(x.numpy(), axes), atol=1e-8)


def test_switchable_norm_weights_receive_gradients() -> None:
    m = NORMS.build("sn", 6)
    m(_x().float()).pow(3).mean().backward()
    assert m.mean_weight.grad.abs().sum() > 0 and m.var_weight.grad.abs().sum() > 0


def test_frozen_bn_fixed_in_train_mode() -> None:
    m = NORMS.build("frozen_bn", 6).double()
    g = torch.Generator().manual_seed(2)
    for buf in ("weight", "bias", "running_mean"):
        getattr(m, buf).copy_(torch.randn(6, generator=g, dtype=torch.float64))
    m.running_var.copy_(torch.rand(6, generator=g, dtype=torch.float64) + 0.5)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = _x()
    m.train()
    y = m(x)
    r = lambda t: t.numpy().reshape(1, 6, 1, 1)  # noqa: E731
    want = (x.numpy() - r(m.running_mean)) / np.sqrt(r(m.running_var) + EPS) * r(m.weight) + r(m.bias)  # fmt: skip
    np.testing.assert_allclose(y.numpy(), want, atol=1e-10)
    assert list(m.parameters()) == []
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k])


def test_frozen_bn_from_bn_matches_bn_eval() -> None:
    from visionkit.layers.norm import FrozenBatchNorm2d

    bn = NORMS.build("bn", 6).double()
    _affine(bn, 6)
    bn(_x())  # update running statistics
    bn.eval()
    frozen = FrozenBatchNorm2d.from_bn(bn)
    x = _x(seed=5)
    torch.testing.assert_close(frozen(x), bn(x))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_sync_bn_equals_bn_without_ddp(mode: str) -> None:
    torch.manual_seed(0)
    bn, sync = NORMS.build("bn", 6).double(), NORMS.build("sync_bn", 6).double()
    x = _x()
    if mode == "eval":
        bn(x), sync(x)
        bn.eval(), sync.eval()
    torch.testing.assert_close(sync(x), bn(x))


def test_none_is_identity() -> None:
    x = _x()
    assert torch.equal(NORMS.build("none", 6)(x), x)


def _sn_reference(m, x: torch.Tensor) -> torch.Tensor:
    """SwitchableNorm written with plain autograd ops (no custom backward), train mode."""
    mean_in, var_in = x.mean((2, 3), keepdim=True), x.var((2, 3), keepdim=True, unbiased=False)
    mean_ln, var_ln = x.mean((1, 2, 3), keepdim=True), x.var((1, 2, 3), keepdim=True, unbiased=False)  # fmt: skip
    mean_bn, var_bn = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, unbiased=False)  # fmt: skip
    wm, wv = torch.softmax(m.mean_weight, 0), torch.softmax(m.var_weight, 0)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
    var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
    return (x - mean) / torch.sqrt(var + EPS) * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)  # fmt: skip


def test_switchable_norm_gradients_match_plain_autograd() -> None:
    m = NORMS.build("sn", 6).double()
    _affine(m, 6)
    with torch.no_grad():
        m.mean_weight.copy_(torch.tensor([0.3, -1.0, 2.0]))
        m.var_weight.copy_(torch.tensor([1.5, 0.2, -0.7]))
    x = _x().requires_grad_(True)
    g = torch.randn_like(x)
    params = [x, m.mean_weight, m.var_weight, m.weight, m.bias]
    ours = torch.autograd.grad(m(x), params, g)
    ref = torch.autograd.grad(_sn_reference(m, x), params, g)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_switchable_norm_gradcheck() -> None:
    m = NORMS.build({"name": "sn", "affine": False}, 3).double()
    x = _x(shape=(2, 3, 3, 2)).requires_grad_(True)
    assert torch.autograd.gradcheck(m, (x,))


@pytest.mark.parametrize("name", ["bn", "sync_bn", "sn"])
@pytest.mark.parametrize(("key", "value"), [("momentum", -1.0), ("momentum", 1.5), ("momentum", float("nan")), ("eps", 0.0), ("eps", -1e-5)])  # fmt: skip
def test_bad_momentum_or_eps_is_a_config_error(name: str, key: str, value: float) -> None:
    # torch takes any number: a momentum of -1 trains to exploding running statistics
    with pytest.raises(ConfigError, match=rf"{key} must be .* got {value}"):
        NORMS.build({"name": name, key: value}, 8)


@pytest.mark.parametrize("momentum", [0.0, 0.03, 1.0])
def test_momentum_in_range_is_kept(momentum: float) -> None:
    assert NORMS.build({"name": "bn", "momentum": momentum}, 8).momentum == momentum
    assert NORMS.build({"name": "sync_bn", "momentum": None}, 8).momentum is None
