"""Prediction batches: each picture prepared alone, the batch's pictures of one size finished
(to float, normalised) in one call, with the numbers of preprocessing each picture alone."""

from __future__ import annotations

import torch

from visionkit.data.predict import predict_loader
from visionkit.data.transforms import Preprocess


def test_a_batch_is_finished_once_per_size() -> None:
    spec = {"image_size": 0, "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "eval_transforms": []}  # fmt: skip
    preprocess = Preprocess(spec)
    calls = []
    finish = preprocess.finish
    preprocess.finish = lambda x: calls.append(tuple(x.shape)) or finish(x)  # type: ignore[method-assign]
    g = torch.Generator().manual_seed(0)
    sizes = [(8, 6), (5, 9), (8, 6), (8, 6), (5, 9)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    batches = list(predict_loader(images, preprocess, batch_size=4))
    assert calls == [(3, 3, 8, 6), (1, 3, 5, 9), (1, 3, 5, 9)]  # two batches: 4 + 1 pictures
    got = [im for b in batches for im in b["images"]]
    assert [b["sizes"] for b in batches] == [sizes[:4], sizes[4:]]
    for image, x in zip(images, got, strict=True):
        assert torch.equal(x, finish(image))
