"""RoIAlign: the separable form and the multi-scale pooler against torchvision's ops (the oracle)."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torchvision

from visionkit.layers import roi_align as ra


def _rois(n: int, r: int, extent: float, seed: int, dtype=torch.float64) -> torch.Tensor:
    """Random rois [r, 5]: some outside the image, some tiny, some images without rois."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, max(n - 1, 1), (r,), generator=g).to(dtype)  # last image: none
    xy = torch.rand(r, 2, generator=g, dtype=dtype) * extent * 1.4 - extent * 0.2
    wh = torch.rand(r, 2, generator=g, dtype=dtype) * extent * 0.6
    wh[: r // 5] = 0.3  # smaller than a feature pixel: torchvision widens them to 1
    return torch.cat([image[:, None], xy, xy + wh], dim=1)


def _counts(rois: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(rois[:, 0].long(), minlength=n)


@pytest.mark.parametrize(
    ("size", "output", "sampling", "scale"),
    [((16, 12), 7, 2, 0.25), ((9, 13), 14, 2, 0.5), ((5, 5), 3, 3, 1.0), ((1, 1), 2, 1, 1.0)],
)
def test_separable_matches_torchvision_values_and_gradients(size, output, sampling, scale):
    h, w = size
    x = torch.randn(3, 4, h, w, dtype=torch.float64, requires_grad=True)
    rois = _rois(3, 40, max(h, w) / scale, seed=h * w)
    expected = torchvision.ops.roi_align(x, rois, output, scale, sampling, aligned=False)
    got = ra._separable_roi_align(x, rois, _counts(rois, 3), (output, output), scale, sampling)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    g = torch.randn_like(expected)
    (want_grad,) = torch.autograd.grad(expected, x, g)
    (got_grad,) = torch.autograd.grad(got, x, g)
    torch.testing.assert_close(got_grad, want_grad, rtol=0, atol=1e-12)


def test_separable_passes_gradcheck():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    rois = _rois(2, 6, 6.0, seed=1)
    assert torch.autograd.gradcheck(
        lambda t: ra._separable_roi_align(t, rois, _counts(rois, 2), (3, 2), 1.0, 2), x
    )


@pytest.mark.parametrize(
    ("maps", "grad", "path"),
    [(8, True, "separable"), (8, False, "torchvision"), (96, True, "torchvision")],
)  # the separable form pays off only through its backward, and only on small maps
def test_roi_align_dispatch_gives_torchvision_result(monkeypatch, maps, grad, path):
    calls = []
    for name, attr in (("separable", "_separable_roi_align"), ("torchvision", "tv_roi_align")):
        fn = getattr(ra, attr)
        monkeypatch.setattr(ra, attr, lambda *a, _fn=fn, _n=name: calls.append(_n) or _fn(*a))
    x = torch.randn(2, 8, maps, maps, requires_grad=grad)
    rois = _rois(2, 30, maps * 4.0, seed=maps, dtype=torch.float32)
    expected = torchvision.ops.roi_align(x, rois, 7, 0.25, 2)
    torch.testing.assert_close(ra.roi_align(x, rois, 7, 0.25, 2), expected, rtol=1e-5, atol=1e-5)
    assert calls == [path]


def test_roi_align_adaptive_sampling_and_no_rois():
    x = torch.randn(2, 3, 8, 8)
    rois = _rois(2, 5, 32.0, seed=3, dtype=torch.float32)
    expected = torchvision.ops.roi_align(x, rois, 4, 0.25, 0)
    torch.testing.assert_close(ra.roi_align(x, rois, 4, 0.25, 0), expected)
    assert ra.roi_align(x, rois[:0], (4, 5), 0.25, 2).shape == (0, 3, 4, 5)


def test_roi_align_rejects_bad_rois():
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"rois must be \[R, 5\]"):
        ra.roi_align(x, torch.zeros(4, 4), 2, 1.0, 2)
    with pytest.raises(ValueError, match=r"name images 0\.\.2 but the features hold 2"):
        ra.roi_align(x, torch.tensor([[0.0, 0, 0, 4, 4], [2.0, 0, 0, 4, 4]]), 2, 1.0, 2)


def test_multiscale_pooler_matches_torchvision():
    names = ["0", "1", "2", "3"]
    feats = OrderedDict(
        (n, torch.randn(3, 4, 64 // 2**i, 48 // 2**i, dtype=torch.float64, requires_grad=True))
        for i, n in enumerate(names)
    )
    feats["pool"] = torch.randn(3, 4, 2, 2, dtype=torch.float64)  # not pooled from
    g = torch.Generator().manual_seed(0)
    boxes = []
    for count in (30, 0, 12):  # the middle image has no boxes
        xy = torch.rand(count, 2, generator=g, dtype=torch.float64) * 60
        wh = torch.rand(count, 2, generator=g, dtype=torch.float64) * 220 + 4
        boxes.append(torch.cat([xy, xy + wh], dim=1).clamp(max=190))
    shapes = [(256, 192), (250, 190), (256, 180)]
    ours = ra.MultiScaleRoIAlign(names, 7, 2)
    theirs = torchvision.ops.MultiScaleRoIAlign(names, 7, 2)
    got, expected = ours(feats, boxes, shapes), theirs(feats, boxes, shapes)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    grads = [
        torch.autograd.grad(y.square().sum(), list(feats.values())[:4], allow_unused=True)
        for y in (got, expected)
    ]
    for x, a, b in zip(feats.values(), *grads, strict=False):  # no boxes on levels 4, 5: zero
        zero = torch.zeros_like(x)
        torch.testing.assert_close(
            zero if a is None else a, zero if b is None else b, rtol=0, atol=1e-12
        )
    # boxes on both sides of the level-2/level-3 boundary (sqrt(area) = 112)
    sides = torch.cat([torch.prod(b[:, 2:] - b[:, :2], 1).sqrt() for b in boxes])
    assert (sides < 112).any() and (sides >= 112).any()


def test_multiscale_pooler_requires_image_shapes():
    pooler = ra.MultiScaleRoIAlign(["0"], 7, 2)
    with pytest.raises(ValueError, match="image_shapes"):
        pooler({"0": torch.randn(1, 2, 4, 4)}, [torch.zeros(0, 4)], [])
