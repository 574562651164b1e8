"""Dataset statistics, streamed: per-channel mean/std, image sizes, classes, objects, boxes, masks.

Each sample is reduced to a small summary where it is read (:func:`summarize_sample`, in DataLoader
workers), and :class:`DatasetStatistics` merges the summaries, so memory does not grow with the
data and images may have any size. Pixel statistics are in the value range the transforms
normalise in: uint8 / 255, i.e. 0..1 (:class:`visionkit.data.transforms.Normalize` takes
``mean``/``std`` in those units), weighted by pixel (a large image counts more than a small one);
the standard deviation is the population one over all pixels (Chan's parallel merge, float64).
Box sizes follow COCO's areas: small < 32², medium < 96², large otherwise (here the box area w·h).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DETECTION_TASKS = ("detection", "instance_segmentation")
SMALL, MEDIUM = 32**2, 96**2
IGNORE = 255


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "as_subclass"):
        import torch

        x = x.as_subclass(torch.Tensor)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def summarize_sample(sample: tuple[Any, Any], task: str) -> dict[str, Any]:
    """One untransformed ``(uint8 image [3,H,W], target)`` -> the numbers the statistics need."""
    image, target = sample
    pixels = _array(image)
    channels, height, width = pixels.shape
    x = pixels.reshape(channels, -1).astype(np.float64) / 255.0
    mean = x.mean(axis=1)
    out: dict[str, Any] = {
        "size": (int(height), int(width)),
        "n": int(x.shape[1]),
        "mean": mean,
        "m2": ((x - mean[:, None]) ** 2).sum(axis=1),
    }
    if task == "classification":
        labels = target if isinstance(target, Sequence | np.ndarray) else [target]
        out["labels"] = [int(v) for v in _array(labels).reshape(-1)]
    elif task == "semantic_segmentation":
        out["pixels"] = np.bincount(_array(target).astype(np.int64).ravel(), minlength=256)
    elif task in DETECTION_TASKS:
        boxes = _array(target["boxes"]).reshape(-1, 4).astype(np.float64)
        crowd = _array(target.get("iscrowd", np.zeros(len(boxes)))).reshape(-1).astype(bool)
        wh = (boxes[:, 2:] - boxes[:, :2]).clip(min=0)
        out["labels"] = [int(v) for v in _array(target["labels"]).reshape(-1)[~crowd]]
        out["box_areas"] = (wh[:, 0] * wh[:, 1])[~crowd].tolist()
        out["crowd"] = int(crowd.sum())
        if "masks" in target:
            masks = _array(target["masks"])
            covered = masks[~crowd].any(axis=0) if len(masks) else np.zeros((height, width), bool)
            out["mask_coverage"] = float(covered.mean())
    return out


class DatasetStatistics:
    """Merges per-sample summaries; :meth:`result` gives the JSON-ready statistics."""

    def __init__(self, task: str, class_names: Sequence[str]) -> None:
        self.task = task
        self.names = list(class_names)
        self.images = 0
        self.pixels = 0
        self.mean = np.zeros(3)
        self.m2 = np.zeros(3)
        self.sizes: Counter[tuple[int, int]] = Counter()
        self.labels: Counter[int] = Counter()
        self.images_with: Counter[int] = Counter()
        self.objects: Counter[int] = Counter()
        self.box_sizes: Counter[str] = Counter()
        self.crowd = 0
        self.class_pixels = np.zeros(256, np.int64)
        self.coverage: list[float] = []

    def add(self, s: Mapping[str, Any]) -> None:
        """Merge one :func:`summarize_sample` result (Chan et al.'s parallel mean/variance)."""
        n = s["n"]
        total = self.pixels + n
        delta = s["mean"] - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + s["m2"] + delta**2 * (self.pixels * n / total)
        self.pixels = total
        self.images += 1
        self.sizes[tuple(s["size"])] += 1
        labels = s.get("labels")
        if labels is not None:
            self.labels.update(labels)
            self.images_with.update(set(labels))
        if "box_areas" in s:
            self.objects[len(s["box_areas"])] += 1
            for area in s["box_areas"]:
                self.box_sizes["small" if area < SMALL else "medium" if area < MEDIUM else "large"] += 1  # fmt: skip
            self.crowd += s["crowd"]
        if "pixels" in s:
            counts = np.asarray(s["pixels"])
            self.class_pixels += counts
            self.images_with.update(int(v) for v in np.flatnonzero(counts[:IGNORE]))
        if "mask_coverage" in s:
            self.coverage.append(s["mask_coverage"])

    def _name(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"<value {index}>"

    def result(self) -> dict[str, Any]:
        """Everything as plain numbers; ``mean``/``std`` per channel in 0..1 units."""
        std = np.sqrt(self.m2 / max(self.pixels, 1))
        heights = np.repeat([h for h, _ in self.sizes], list(self.sizes.values()))
        widths = np.repeat([w for _, w in self.sizes], list(self.sizes.values()))

        def spread(values: np.ndarray) -> dict[str, float]:
            if not len(values):
                return {}
            return {"min": int(values.min()), "max": int(values.max()), "mean": float(values.mean()), "median": float(np.median(values))}  # fmt: skip

        out: dict[str, Any] = {
            "task": self.task,
            "images": self.images,
            "pixels": int(self.pixels),
            "value_range": "0..1 (uint8 / 255, the units data.mean and data.std are in)",
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in std],
            "image_sizes": {
                "height": spread(heights),
                "width": spread(widths),
                "distinct": len(self.sizes),
                "most_common": [[h, w, c] for (h, w), c in self.sizes.most_common(10)],
            },
        }
        if self.task == "classification":
            out["class_images"] = {n: self.labels.get(i, 0) for i, n in enumerate(self.names)}
        elif self.task == "semantic_segmentation":
            labelled = int(self.class_pixels[:IGNORE].sum())
            out["class_pixel_fraction"] = {
                n: float(self.class_pixels[i] / max(labelled, 1)) for i, n in enumerate(self.names)
            }
            out["class_images"] = {n: self.images_with.get(i, 0) for i, n in enumerate(self.names)}
            out["ignore_pixel_fraction"] = float(self.class_pixels[IGNORE] / max(self.pixels, 1))
            unknown = {self._name(int(v)): int(self.class_pixels[v]) for v in np.flatnonzero(self.class_pixels[len(self.names) : IGNORE])}  # fmt: skip
            if unknown:
                out["unknown_values_pixels"] = unknown
        elif self.task in DETECTION_TASKS:
            out["class_objects"] = {n: self.labels.get(i, 0) for i, n in enumerate(self.names)}
            out["class_images"] = {n: self.images_with.get(i, 0) for i, n in enumerate(self.names)}
            counts = np.repeat(list(self.objects), list(self.objects.values()))
            out["objects_per_image"] = {
                **spread(counts),
                "histogram": {str(k): self.objects[k] for k in sorted(self.objects)},
            }
            out["box_sizes"] = {k: self.box_sizes.get(k, 0) for k in ("small", "medium", "large")}
            out["crowd_regions"] = self.crowd
            if self.coverage:
                cov = np.asarray(self.coverage)
                out["mask_coverage"] = {"mean": float(cov.mean()), "min": float(cov.min()), "max": float(cov.max())}  # fmt: skip
        return out


def normalisation_overrides(stats: Mapping[str, Any], task: str, digits: int = 4) -> str:
    """The command-line overrides that normalise with these statistics, ready to paste.

    Classification and semantic segmentation normalise in the data pipeline (``data.mean`` /
    ``data.std``); torchvision detectors normalise inside the model (``model.head.image_mean`` /
    ``image_std``, not in the head configs, hence ``++``).
    """

    def fmt(values: Sequence[float]) -> str:
        return "[" + ",".join(f"{v:.{digits}f}" for v in values) + "]"

    if task in DETECTION_TASKS:
        return f"++model.head.image_mean={fmt(stats['mean'])} ++model.head.image_std={fmt(stats['std'])}"  # fmt: skip
    return f"data.mean={fmt(stats['mean'])} data.std={fmt(stats['std'])}"


def plot_statistics(stats: Mapping[str, Any], path: str | Path) -> Path:
    """Image sizes, class frequencies, objects per image / pixel shares, box sizes, channel stats."""
    from visionkit.figures import pyplot, save_figure

    plt = pyplot()
    panels = ["sizes", "classes", "channels"]
    if "objects_per_image" in stats:
        panels += ["objects", "boxes"]
    if "class_pixel_fraction" in stats:
        panels += ["pixels"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        if panel == "sizes":
            rows = stats["image_sizes"]["most_common"]
            ax.scatter([r[1] for r in rows], [r[0] for r in rows], s=[20 + 5 * r[2] for r in rows], alpha=0.6)  # fmt: skip
            ax.set_xlabel("width")
            ax.set_ylabel("height")
            ax.set_title(f"image sizes ({stats['image_sizes']['distinct']} distinct)")
        elif panel == "classes":
            counts = stats.get("class_objects") or stats.get("class_images") or {}
            ax.bar(range(len(counts)), list(counts.values()))
            ax.set_xticks(range(len(counts)), list(counts), rotation=45, ha="right")
            ax.set_title("objects per class" if "class_objects" in stats else "images per class")
        elif panel == "channels":
            ax.bar(np.arange(3) - 0.2, stats["mean"], width=0.4, label="mean")
            ax.bar(np.arange(3) + 0.2, stats["std"], width=0.4, label="std")
            ax.set_xticks(range(3), ["R", "G", "B"])
            ax.set_ylim(0, 1)
            ax.legend()
            ax.set_title("pixel values (0..1)")
        elif panel == "objects":
            hist = stats["objects_per_image"]["histogram"]
            ax.bar([int(k) for k in hist], list(hist.values()))
            ax.set_xlabel("objects")
            ax.set_title("objects per image")
        elif panel == "boxes":
            sizes = stats["box_sizes"]
            ax.bar(list(sizes), list(sizes.values()))
            ax.set_title("box sizes (COCO: < 32², < 96², larger)")
        elif panel == "pixels":
            shares = stats["class_pixel_fraction"]
            ax.bar(range(len(shares)), list(shares.values()))
            ax.set_xticks(range(len(shares)), list(shares), rotation=45, ha="right")
            ax.set_title("share of labelled pixels")
    return save_figure(fig, path)
