"""Prediction inputs: pictures of any size and mode (paths, PIL images, arrays, tensors), decoded and
preprocessed in DataLoader workers, batched as lists (sizes may differ; the task stacks what it can).
With a :class:`~visionkit.data.transforms.Preprocess`, each picture is prepared (eval transforms)
alone and the batch's pictures of one size are finished (to float, normalised) in one call.

A batch is ``{"images": [float [3,h,w]], "sizes": [(H, W) of each original], "index": [int],
"raw": [uint8 [3,H,W]] (when ``keep_raw``)}``; tasks' ``predict_step`` reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset


class PredictImages(Dataset):
    """``items[i]`` decoded (RGB uint8) and preprocessed (``preprocess``: a Preprocess, prepared
    only, or any uint8 -> float callable); errors name the file."""

    def __init__(self, items: Sequence[Any], preprocess: Callable[[torch.Tensor], torch.Tensor], keep_raw: bool = False) -> None:  # fmt: skip
        self.items = list(items)
        self.preprocess = getattr(preprocess, "prepare", preprocess)
        self.keep_raw = keep_raw

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from visionkit.data.images import as_uint8_tensor

        raw = as_uint8_tensor(self.items[index])
        sample = {"image": self.preprocess(raw), "size": tuple(raw.shape[-2:]), "index": index}
        if self.keep_raw:
            sample["raw"] = raw
        return sample


def collate(samples: list[dict[str, Any]], finish: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, list[Any]]:  # fmt: skip
    """A list of samples -> one batch of lists (images of different sizes stay separate);
    ``finish`` runs once per group of images of one shape (the images are views of its output)."""
    batch: dict[str, list[Any]] = {"images": [s["image"] for s in samples], "sizes": [], "index": []}  # fmt: skip
    if finish is not None:
        for indices in by_shape(batch["images"]):
            done = finish(torch.stack([batch["images"][i] for i in indices]))
            for i, image in zip(indices, done, strict=True):
                batch["images"][i] = image
    for s in samples:
        batch["sizes"].append(s["size"])
        batch["index"].append(s["index"])
        if "raw" in s:
            batch.setdefault("raw", []).append(s["raw"])
    return batch


def predict_loader(items: Sequence[Any], preprocess: Callable[[torch.Tensor], torch.Tensor], batch_size: int = 8, num_workers: int = 0, keep_raw: bool = False) -> Iterable[dict[str, list[Any]]]:  # fmt: skip
    """Batches of ``items`` in order; ``num_workers`` processes decode and preprocess them (0: the
    main process, without a DataLoader, whose per-call set-up is half of visionkit's cost when one
    small image is predicted per call)."""
    from functools import partial

    dataset = PredictImages(items, preprocess, keep_raw)
    size = max(1, int(batch_size))
    batches = partial(collate, finish=getattr(preprocess, "finish", None))
    if int(num_workers) == 0:
        n = len(dataset)
        return (batches([dataset[i] for i in range(start, min(start + size, n))]) for start in range(0, n, size))  # fmt: skip
    return DataLoader(dataset, batch_size=size, shuffle=False, num_workers=int(num_workers), collate_fn=batches)  # fmt: skip


def by_shape(images: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of ``images`` grouped by shape (each group runs as one stacked batch, so a result
    never depends on the other images of its batch)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(i)
    return list(groups.values())
