"""Class frequencies of a training set and the class weights derived from them.

* :func:`sample_classes`: the classes present in each training sample, read from the annotations
  (masks for mask folders), never by decoding images; what the samplers
  (:mod:`visionkit.data.samplers`) and the image-level counts use. A dataset of another format
  tells it through a ``sample_classes()`` method returning one list of class indices per sample;
* :func:`class_counts`: samples per class (classification), pixels per class (semantic
  segmentation);
* :func:`class_weights`: ``inverse`` (1/n), ``sqrt_inverse`` (1/sqrt n) or ``effective_number``
  ((1 - beta) / (1 - beta^n), Cui et al. 2019), scaled so the mean over the classes present is 1;
  a class absent from the training set gets the largest weight (it never occurs in training).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from visionkit.errors import ConfigError

METHODS = ("inverse", "sqrt_inverse", "effective_number")
IGNORE = 255


def class_weights(counts: Any, method: str, beta: float = 0.999) -> list[float]:
    """Per-class loss weights from per-class counts; see the module docstring."""
    n = np.asarray(counts, dtype=np.float64)
    if method not in METHODS:
        raise ConfigError(f"task.class_weights={method!r}: choose one of {', '.join(METHODS)}")
    present = n > 0
    if not present.any():
        raise ConfigError("task.class_weights: the training set has no labelled sample")
    w = np.zeros_like(n)
    if method == "inverse":
        w[present] = 1.0 / n[present]
    elif method == "sqrt_inverse":
        w[present] = 1.0 / np.sqrt(n[present])
    else:
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"task.class_weights_beta={beta}: must be in [0, 1)")
        w[present] = (1.0 - beta) / (1.0 - np.power(beta, n[present]))
    w[present] *= present.sum() / w[present].sum()
    w[~present] = w[present].max()
    return [float(x) for x in w]


def sample_classes(dataset: Any, task: str) -> list[list[int]]:
    """The class indices present in each sample of ``dataset`` (see the module docstring)."""
    from visionkit.data.coco.reader import CocoDataset
    from visionkit.data.folders.reader import ArrayImages, ImageMaskPairs, LabelledFiles

    own = getattr(dataset, "sample_classes", None)
    if callable(own):
        return [sorted({int(c) for c in classes}) for classes in own()]
    if isinstance(dataset, LabelledFiles):
        return [[int(label)] for _, label in dataset.items]
    if isinstance(dataset, ArrayImages):
        return [[int(label)] for label in dataset.labels]
    if isinstance(dataset, ImageMaskPairs):
        out = []
        for _, mask_path in dataset.pairs:
            values = np.unique(dataset.read_mask(mask_path))
            out.append([int(v) for v in values if v != IGNORE])
        return out
    if isinstance(dataset, CocoDataset):
        lm, out = dataset.label_map, []
        for rec in dataset.records:
            if task == "classification" and not dataset.multi_label:
                out.append([int(dataset.target(rec))])
            else:
                shift = 1 if task == "semantic_segmentation" else 0  # index 0 is background
                out.append(sorted({lm.to_index(a["category_id"]) + shift for a in rec.anns if not a["iscrowd"]}))  # fmt: skip
        return out
    raise ConfigError(
        f"{type(dataset).__name__} does not tell its samples' classes (needed by class weights "
        "and class-aware samplers); give it a sample_classes() method"
    )


def class_counts(dataset: Any, task: str, num_classes: int) -> np.ndarray:
    """Samples per class (pixels per class for semantic segmentation), int64 [num_classes]."""
    if task != "semantic_segmentation":
        counts = np.zeros(num_classes, np.int64)
        for classes in sample_classes(dataset, task):
            for c in classes:
                counts[c] += 1
        return counts
    from visionkit.data.coco.reader import CocoDataset
    from visionkit.data.folders.reader import ImageMaskPairs

    if isinstance(dataset, ImageMaskPairs):
        masks = (dataset.read_mask(path) for _, path in dataset.pairs)
    elif isinstance(dataset, CocoDataset):
        masks = (np.asarray(dataset.target(rec)) for rec in dataset.records)
    else:
        raise ConfigError(
            f"{type(dataset).__name__}: pixel counts per class (semantic segmentation class "
            "weights) are known for COCO and mask-folder data only"
        )
    counts = np.zeros(num_classes, np.int64)
    for mask in masks:
        values = np.asarray(mask).reshape(-1)
        counts += np.bincount(values[values != IGNORE], minlength=num_classes)[:num_classes]
    return counts


def weights_from_data(dm: Any, method: str, beta: float = 0.999) -> list[float]:
    """``class_weights`` of the datamodule's training split (what ``task.class_weights=<method>``
    resolves to before the task is built; the task keeps the list, checkpoints too)."""
    counts = class_counts(dm._dataset("train"), dm.task, dm.num_classes)
    return class_weights(counts, method, beta)
