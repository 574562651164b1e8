"""maxpool/unpool pairing (visionkit.layers.pool): values go back where the pool found them."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import visionkit.layers  # noqa: F401
from visionkit.errors import ConfigError
from visionkit.registries import LAYERS, UPSAMPLERS


def _unpool_oracle(x: np.ndarray, k: int) -> np.ndarray:
    """Each k x k window keeps its maximum at its position, zeros elsewhere (NumPy)."""
    out = np.zeros_like(x)
    n, c, h, w = x.shape
    for b, ch, i, j in itertools.product(range(n), range(c), range(0, h - k + 1, k), range(0, w - k + 1, k)):  # fmt: skip
        win = x[b, ch, i : i + k, j : j + k]
        a, bb = np.unravel_index(np.argmax(win), win.shape)
        out[b, ch, i + a, j + bb] = win[a, bb]
    return out


@pytest.mark.parametrize("k,size", [(2, (8, 6)), (3, (9, 12)), (2, (7, 9))])
def test_unpool_puts_values_back_where_maxpool_found_them(k: int, size: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randperm(2 * 3 * size[0] * size[1], generator=g).float().view(2, 3, *size)  # unique
    pool = LAYERS.build("maxpool", 3, 3, kernel_size=k)
    unpool = UPSAMPLERS.build("unpool", 3, 3, k, pool=pool)
    y = unpool(pool(x))
    assert y.shape == x.shape
    np.testing.assert_array_equal(y.numpy(), _unpool_oracle(x.numpy(), k))
    # the explicit form gives the same result
    explicit = UPSAMPLERS.build("unpool", 3, 3, k, kernel_size=k)
    torch.testing.assert_close(explicit(pool(x), pool.last_indices, pool.last_input_size), y)


def test_unpool_pairing_errors() -> None:
    pool = LAYERS.build("maxpool", 3, 3)
    unpool = UPSAMPLERS.build("unpool", 3, 3, 2, pool=pool)
    with pytest.raises(RuntimeError, match="no indices"):
        unpool(torch.randn(1, 3, 2, 2))
    pool(torch.randn(1, 3, 8, 8))
    with pytest.raises(RuntimeError, match="does not match"):
        unpool(torch.randn(1, 3, 2, 2))
    with pytest.raises(ConfigError, match="channel count"):
        LAYERS.build("maxpool", 3, 4)
    assert list(dict(unpool.named_modules())) == ["", "unpool"]  # the pool is referenced, not owned


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("shape", [(2, 4, 8, 6), (1, 3, 7, 9), (3, 5, 4), (2, 3, 2, 2)])
def test_unpaired_maxpool_matches_max_pool2d_and_keeps_no_indices(shape: tuple[int, ...], fmt: torch.memory_format) -> None:  # fmt: skip
    """Unpaired (the backbones' downsampling): F.max_pool2d's values and memory format, NaN
    included, no indices kept; with autograd and for other windows it is F.max_pool2d itself."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    x.view(-1)[3] = float("nan")
    x.view(-1)[5] = x.view(-1)[4]  # a tie
    if x.dim() == 4:
        x = x.contiguous(memory_format=fmt)
    pool = LAYERS.build("maxpool", shape[-3], shape[-3])
    assert pool._pairwise(x)  # the elementwise path is the one tested
    with torch.inference_mode():
        y = pool(x)
    ref = torch.nn.functional.max_pool2d(x, 2, 2)
    torch.testing.assert_close(y, ref, rtol=0, atol=0, equal_nan=True)
    assert y.stride() == ref.stride()
    assert pool.last_indices is None and pool.last_input_size is None
    # autograd: max_pool2d itself (a tie's gradient goes to one input, as in training before)
    leaf = x.detach().requires_grad_(True)
    assert not pool._pairwise(leaf)
    pool(leaf).nansum().backward()
    leaf_ref = x.detach().requires_grad_(True)
    torch.nn.functional.max_pool2d(leaf_ref, 2, 2).nansum().backward()
    assert torch.equal(leaf.grad, leaf_ref.grad)
    wide = LAYERS.build("maxpool", shape[-3], kernel_size=3, stride=2, padding=1)
    assert not wide._pairwise(x)


def test_paired_maxpool_records_indices_for_its_unpool() -> None:
    """Building an unpool with ``pool=`` makes that pool keep its indices; the unpool puts each
    value back where max_pool2d's indices say (oracle: F.max_pool2d(return_indices=True))."""
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(1))
    pool = LAYERS.build("maxpool", 3, 3)
    assert not pool.record_indices
    unpool = UPSAMPLERS.build("unpool", 3, 3, 2, pool=pool)
    assert pool.record_indices
    with torch.inference_mode():
        y = unpool(pool(x))
    ref, indices = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    assert torch.equal(pool.last_indices, indices) and pool.last_input_size == x.shape
    assert torch.equal(y, torch.nn.functional.max_unpool2d(ref, indices, 2, 2, output_size=x.shape[-2:]))  # fmt: skip


def test_traced_maxpool_keeps_its_operator() -> None:
    """An exported graph (traced) keeps max_pool2d (ONNX MaxPool), not the elementwise form."""
    pool = LAYERS.build("maxpool", 3, 3)
    with torch.no_grad():
        graph = torch.jit.trace(pool, torch.randn(1, 3, 8, 8))
    assert "aten::max_pool2d" in str(graph.graph) and "aten::maximum" not in str(graph.graph)
