"""Multi-image augmentation: ``mosaic`` (detection, instance segmentation) and ``copy_paste``
(instance segmentation), TRANSFORMS entries usable from YAML::

    data.train_transforms: [{name: mosaic, p: 0.5}, {name: hflip}]

They need other samples of the training set: the datamodule binds each one to its training
dataset at setup (:func:`bind_multi_image`), through :class:`RawSamples` (a sample as decoded,
before the pipeline). So they come first in ``data.train_transforms`` (the steps after them see
the combined sample) and never in ``eval_transforms``. Which other samples is drawn from torch's
RNG, like every other random transform: in loader workers it is seeded from (seed, epoch)
(visionkit.data.shuffling), so a resumed run replays it.

Boxes and masks stay consistent: with masks (instance segmentation), every box is recomputed as
its mask's tight box ``[x_min, y_min, x_max + 1, y_max + 1]`` after the geometry changed (an
instance whose mask vanished is removed and counted by the pipeline's Sanitize step); crowd
regions keep ``iscrowd=1`` (they are pasted and occluded like instances, never turned into them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from visionkit.errors import ConfigError

DETECTION_TASKS = ("detection", "instance_segmentation")
FILL = 114  # grey where no image lands (as YOLO mosaics)


class RawSamples:
    """Sample ``j`` of a map-style dataset as decoded, without its ``transform`` (which is set
    aside during the call: a worker process runs one ``__getitem__`` at a time)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        transform, self.dataset.transform = self.dataset.transform, None
        try:
            return self.dataset[index]
        finally:
            self.dataset.transform = transform


class MultiImageTransform(v2.Transform):
    """A transform that combines the sample with others of its dataset (bound by the datamodule)."""

    tasks: tuple[str, ...] = DETECTION_TASKS
    name = "multi_image"  # its TRANSFORMS key, for messages

    def __init__(self, p: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"{self.name}: p={p} must be in [0, 1]")
        self.p = float(p)
        self.source: Any = None

    def bind(self, source: Any) -> None:
        """Where the other samples come from (a sequence of raw samples)."""
        self.source = source

    def other(self) -> tuple[Any, dict[str, Any]]:
        return self.source[int(torch.randint(len(self.source), ()))]

    def forward(self, *inputs: Any) -> Any:
        sample = inputs if len(inputs) > 1 else inputs[0]
        if self.source is None:
            raise ConfigError(
                f"transform '{self.name}' needs the other training samples: use it in "
                "data.train_transforms of a visionkit datamodule (or call bind())"
            )
        if self.p < 1.0 and float(torch.rand(())) >= self.p:
            return sample
        return self.combine(*sample)

    def combine(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight XYXY boxes (pixel edges: ``x_max + 1``) of masks [N,H,W]; zeros for empty masks."""
    n = masks.shape[0]
    boxes = torch.zeros(n, 4)
    if n == 0:
        return boxes
    filled = masks.bool()
    cols, rows = filled.any(dim=1), filled.any(dim=2)  # [N,W], [N,H]
    present = cols.any(dim=1)
    w, h = cols.shape[1], rows.shape[1]
    xs, ys = torch.arange(w), torch.arange(h)
    big = 1 << 30
    boxes[:, 0] = torch.where(cols, xs, big).min(dim=1).values.float()
    boxes[:, 2] = torch.where(cols, xs, -1).max(dim=1).values.float() + 1
    boxes[:, 1] = torch.where(rows, ys, big).min(dim=1).values.float()
    boxes[:, 3] = torch.where(rows, ys, -1).max(dim=1).values.float() + 1
    boxes[~present] = 0
    return boxes


def _target(base: dict[str, Any], boxes: torch.Tensor, size: tuple[int, int], labels: torch.Tensor, iscrowd: torch.Tensor, masks: torch.Tensor | None) -> dict[str, Any]:  # fmt: skip
    out = {
        k: v for k, v in base.items() if k not in ("boxes", "labels", "iscrowd", "masks", "area")
    }
    if masks is not None:
        boxes = mask_boxes(masks)
        out["masks"] = tv_tensors.Mask(masks.to(torch.uint8))
    out["boxes"] = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=size)
    out["labels"], out["iscrowd"] = labels.long(), iscrowd.long()
    return out


class Mosaic(MultiImageTransform):
    """Four images (this one and three drawn from the dataset) in the quadrants around a random
    centre of a ``size`` x ``size`` canvas (default: this image's longer side), each resized to
    its quadrant, so objects shrink by half on average. The centre lies in ``center`` (fractions
    of the side) on both axes."""

    name = "mosaic"

    def __init__(self, size: int | None = None, p: float = 1.0, center: Sequence[float] = (0.3, 0.7)) -> None:  # fmt: skip
        super().__init__(p)
        lo, hi = (float(c) for c in center)
        if not 0.0 < lo <= hi < 1.0:
            raise ConfigError(
                f"mosaic: center={list(center)} must be two fractions 0 < lo <= hi < 1"
            )
        if size is not None and int(size) < 2:
            raise ConfigError(f"mosaic: size={size} must be >= 2")
        self.size, self.center = (int(size) if size is not None else None), (lo, hi)

    def combine(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        samples = [(image, target)] + [self.other() for _ in range(3)]
        s = self.size or max(image.shape[-2:])
        lo, hi = self.center
        cx, cy = (min(s - 1, max(1, round(s * (lo + (hi - lo) * float(torch.rand(())))))) for _ in range(2))  # fmt: skip
        quads = [(0, 0, cx, cy), (cx, 0, s, cy), (0, cy, cx, s), (cx, cy, s, s)]
        canvas = torch.full((image.shape[0], s, s), FILL, dtype=image.dtype)
        with_masks = "masks" in target
        boxes, labels, crowd, masks = [], [], [], []
        for (img, tgt), (x0, y0, x1, y1) in zip(samples, quads, strict=True):
            qw, qh = x1 - x0, y1 - y0
            h, w = img.shape[-2:]
            canvas[:, y0:y1, x0:x1] = TF.resize(img.as_subclass(torch.Tensor), [qh, qw], antialias=True)  # fmt: skip
            b = tgt["boxes"].as_subclass(torch.Tensor).float().reshape(-1, 4)
            boxes.append(b * torch.tensor([qw / w, qh / h] * 2) + torch.tensor([x0, y0, x0, y0]))
            labels.append(tgt["labels"])
            crowd.append(tgt.get("iscrowd", torch.zeros(len(b), dtype=torch.int64)))
            if with_masks:
                m = tgt["masks"].as_subclass(torch.Tensor)
                placed = torch.zeros(len(m), s, s, dtype=torch.uint8)
                if len(m):
                    placed[:, y0:y1, x0:x1] = TF.resize(m, [qh, qw], interpolation=v2.InterpolationMode.NEAREST)  # fmt: skip
                masks.append(placed)
        out = _target(target, torch.cat(boxes), (s, s), torch.cat(labels), torch.cat(crowd), torch.cat(masks) if with_masks else None)  # fmt: skip
        return tv_tensors.Image(canvas), out


class CopyPaste(MultiImageTransform):
    """Simple copy-paste (Ghiasi et al. 2021): the non-crowd instances of another training image
    (resized to this one), each kept with probability ``instance_p``, are pasted on top; the
    instances (and crowd regions) they cover lose those pixels, boxes follow the masks."""

    tasks = ("instance_segmentation",)
    name = "copy_paste"

    def __init__(self, p: float = 1.0, instance_p: float = 0.5) -> None:
        super().__init__(p)
        if not 0.0 <= instance_p <= 1.0:
            raise ConfigError(f"copy_paste: instance_p={instance_p} must be in [0, 1]")
        self.instance_p = float(instance_p)

    def combine(self, image: Any, target: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if "masks" not in target:
            raise ConfigError("copy_paste needs instance masks (task instance_segmentation)")
        img2, tgt2 = self.other()
        h, w = image.shape[-2:]
        m2 = tgt2["masks"].as_subclass(torch.Tensor)
        crowd2 = tgt2.get("iscrowd", torch.zeros(len(m2), dtype=torch.int64))
        chosen = (torch.rand(len(m2)) < self.instance_p) & (crowd2 == 0)
        if not bool(chosen.any()):
            return image, target
        pasted_img = TF.resize(img2.as_subclass(torch.Tensor), [h, w], antialias=True)
        pasted = TF.resize(m2[chosen], [h, w], interpolation=v2.InterpolationMode.NEAREST)
        cover = pasted.bool().any(dim=0)
        out_img = torch.where(cover, pasted_img, image.as_subclass(torch.Tensor))
        masks = target["masks"].as_subclass(torch.Tensor) * (~cover).to(torch.uint8)
        crowd = target.get("iscrowd", torch.zeros(len(masks), dtype=torch.int64))
        out = _target(
            target,
            torch.zeros(len(masks) + len(pasted), 4),
            (h, w),
            torch.cat([target["labels"], tgt2["labels"][chosen]]),
            torch.cat([crowd, torch.zeros(int(chosen.sum()), dtype=torch.int64)]),
            torch.cat([masks, pasted]),
        )
        return tv_tensors.Image(out_img), out


def bind_multi_image(pipeline: Any, dataset: Any, task: str, train: bool, where: str) -> None:
    """Give the pipeline's multi-image transforms their dataset; refuse them where they cannot
    work (``where``: the config key, e.g. ``data.train_transforms``)."""
    steps = list(getattr(pipeline, "transforms", []))
    for i, step in enumerate(steps):
        if not isinstance(step, MultiImageTransform):
            continue
        if not train:
            raise ConfigError(f"{where}: '{step.name}' is a training augmentation (data.train_transforms only)")  # fmt: skip
        if task not in step.tasks:
            raise ConfigError(f"{where}: '{step.name}' is for {' and '.join(step.tasks)}, not task '{task}'")  # fmt: skip
        if any(not isinstance(s, MultiImageTransform) for s in steps[:i]):
            raise ConfigError(f"{where}: '{step.name}' must come first (it combines decoded samples; later steps see the result)")  # fmt: skip
        step.bind(RawSamples(dataset))
