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
