"""COCOEvaluator: a test split's detections -> ``detections.json`` -> COCOeval numbers.

In the spirit of detectron2's ``COCOEvaluator``: :meth:`~CocoEvaluator.reset` before a split,
:meth:`~CocoEvaluator.process` per batch, :meth:`~CocoEvaluator.evaluate` at the end. The test mAP
is computed by evaluating exactly the exported ``detections.json`` (COCO results: original image
and category ids, xywh boxes in the original image's pixels, RLE masks) against the data's
ground-truth file, so results.json and pycocotools agree by construction.

The datamodule feeds it (:meth:`~CocoEvaluator.for_datamodule`): its ``ground_truth_file`` and the
original image sizes from its validated index (``image_sizes``), never a second parse of the
annotation file. Data without a COCO file gets one written from the tested targets. Under DDP the
detections are gathered on rank zero, which evaluates and broadcasts the summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from visionkit.data.labels import LabelMap
from visionkit.distributed import broadcast_object, gather_objects, rank
from visionkit.evaluation.coco_results import encode_mask, evaluate, to_coco_results, write_results
from visionkit.predictions import to_original_size

Target = dict[str, Any]


class CocoEvaluator:
    """Collects one split's detections and evaluates them with COCOeval (see the module docstring).

    ``iou_types``: ``("bbox",)`` or ``("bbox", "segm")``; ``backend``: ``faster_coco_eval`` or
    ``pycocotools``; ``mask_threshold``: mask probability cut; ``output_dir``: where
    ``detections.json`` (and, without a COCO file, ``ground_truth_<split>.json``) are written.
    """

    def __init__(
        self,
        label_map: LabelMap,
        iou_types: Sequence[str],
        backend: str,
        mask_threshold: float,
        output_dir: str | Path,
    ) -> None:
        self.label_map = label_map
        self.iou_types = tuple(iou_types)
        self.backend = backend
        self.mask_threshold = mask_threshold
        self.output_dir = Path(output_dir)
        self.split = "test"
        self.ground_truth: Path | None = None
        self.image_sizes: dict[int, tuple[int, int]] = {}
        self._groups: list[tuple[int, list[dict[str, Any]], Target]] = []

    def reset(
        self,
        split: str = "test",
        ground_truth: str | Path | None = None,
        image_sizes: dict[int, tuple[int, int]] | None = None,
    ) -> None:
        """Start a split: its COCO ground-truth file (None: written from the targets) and its
        original image sizes ``{image_id: (height, width)}`` (evaluation resizes are undone)."""
        self.split = split
        self.ground_truth = Path(ground_truth) if ground_truth is not None else None
        self.image_sizes = dict(image_sizes or {})
        self._groups = []

    def for_datamodule(self, datamodule: Any, split: str = "test") -> CocoEvaluator:
        """:meth:`reset` from a datamodule's ``ground_truth_file(split, output_dir)`` and
        ``image_sizes(split)`` (either may be absent: third-party data)."""
        gt_fn = getattr(datamodule, "ground_truth_file", None)
        gt = gt_fn(split, self.output_dir) if callable(gt_fn) else None
        gt = Path(gt) if gt is not None and Path(gt).is_file() else None
        sizes_fn = getattr(datamodule, "image_sizes", None)
        sizes = sizes_fn(split) if callable(sizes_fn) and gt is not None else None
        self.reset(split, gt, sizes)
        return self

    def process(self, images: Sequence[torch.Tensor], preds: Sequence[Target], targets: Sequence[Target]) -> None:  # fmt: skip
        """One batch: detections in the model input's pixels, with the targets (``image_id``)."""
        for img, pred, target in zip(images, preds, targets, strict=True):
            image_id = int(target["image_id"])
            original = self.image_sizes.get(image_id)
            pred = to_original_size(pred, tuple(img.shape[-2:]), original)
            records = to_coco_results([{**pred, "image_id": image_id}], self.label_map, self.mask_threshold)  # fmt: skip
            gt = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in target.items()}
            gt["size"] = original or tuple(img.shape[-2:])
            if "segm" not in self.iou_types:
                gt.pop("masks", None)
            self._groups.append((image_id, records, gt))

    def evaluate(self) -> dict[str, Any]:
        """Every rank's detections gathered; rank zero writes and evaluates them; the summary
        (``metrics``, ``detections``, ``ground_truth``, ``evaluated_images``, ``all_images``,
        ``image_ids``) on every rank."""
        groups = gather_objects(self._groups)
        summary = self._evaluate(groups) if rank() == 0 else {}
        self._groups = []
        return broadcast_object(summary)

    def _evaluate(self, groups: list[tuple[int, list, Target]]) -> dict[str, Any]:
        seen: dict[int, tuple[list, Target]] = {}
        for image_id, records, gt in groups:  # DDP samplers pad with repeated images
            seen.setdefault(image_id, (records, gt))
        results = [r for records, _ in seen.values() for r in records]
        path = write_results(self.output_dir / "detections.json", results)
        gt_file = self.ground_truth
        if gt_file is None:  # not COCO-backed: the ground truth of what was tested, as COCO json
            gt_file = write_gt(self.output_dir / f"ground_truth_{self.split}.json", seen, self.label_map)  # fmt: skip
        all_ids = set(self.image_sizes) if self.image_sizes else set(seen)
        subset = set(seen) != all_ids
        metrics = evaluate(
            gt_file,
            results,
            self.iou_types,
            self.backend,
            image_ids=sorted(seen) if subset else None,
        )
        return {
            "metrics": metrics,
            "detections": str(path),
            "ground_truth": str(gt_file),
            "evaluated_images": len(seen),
            "all_images": not subset,
            "image_ids": sorted(seen),
        }


def write_gt(path: Path, seen: dict[int, tuple[list, Target]], label_map: LabelMap) -> Path:
    """A COCO ground-truth file from the targets of the tested images (formats without one)."""
    images, anns = [], []
    for image_id, (_, t) in seen.items():
        h, w = t["size"]
        images.append({"id": image_id, "height": int(h), "width": int(w)})
        crowd = t.get("iscrowd", torch.zeros_like(t["labels"]))
        ids = label_map.to_ids(t["labels"].tolist())
        for j, (box, cid) in enumerate(zip(t["boxes"].tolist(), ids, strict=True)):
            x1, y1, x2, y2 = box
            ann = {
                "id": len(anns) + 1,
                "image_id": image_id,
                "category_id": int(cid),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": int(crowd[j]),
            }
            if "masks" in t:
                mask = t["masks"][j].numpy()
                ann["segmentation"] = encode_mask(mask)
                ann["area"] = float(mask.sum())
            anns.append(ann)
    cats = label_map.categories()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path
