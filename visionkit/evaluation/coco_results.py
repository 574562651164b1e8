"""COCO results export and evaluation (``pycocotools`` or ``faster_coco_eval``, same numbers).

:func:`to_coco_results` turns per-image predictions (contiguous labels, image pixels) into the COCO
results format with the dataset's original category and image ids (boxes xywh, masks RLE);
:func:`evaluate` runs COCOeval on a ground-truth file and those results and returns the 12 COCO
summary numbers under torchmetrics' names (``map``, ``map_50``, ..., ``mar_100``), prefixed with
``bbox_``/``segm_`` when several IoU types are evaluated.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.labels import LabelMap
from visionkit.errors import ConfigError, DataError
from visionkit.files import atomic_open

BACKENDS = ("faster_coco_eval", "pycocotools")
STAT_NAMES = (
    "map", "map_50", "map_75", "map_small", "map_medium", "map_large",
    "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large",
)  # fmt: skip

# faster_coco_eval logs its progress and summary tables at INFO (COCOeval.print_function, ~20
# lines per evaluation, in every validation epoch through torchmetrics too); Hydra's logging
# config shows INFO. Keep its warnings and errors; a level set before this import is respected.
_backend_log = logging.getLogger("faster_coco_eval")
if _backend_log.level == logging.NOTSET:
    _backend_log.setLevel(logging.WARNING)


def check_backend(backend: str) -> str:
    """The backend name, or a ConfigError listing the choices."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown COCO evaluation backend '{backend}'; choose one of {BACKENDS}")
    return backend


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """Binary [H,W] mask -> COCO RLE with a JSON-ready ``counts`` string."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def to_coco_results(
    predictions: Iterable[Mapping[str, Any]],
    category_ids: LabelMap | Sequence[int],
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """Per-image dicts (``image_id``, ``boxes`` xyxy, ``labels`` 0..K-1, ``scores``[, ``masks``
    [M,(1,)H,W]]) -> COCO result records with original category ids (xywh boxes, RLE masks);
    ``category_ids``: the task's LabelMap (or the ids in index order)."""
    label_map = category_ids if isinstance(category_ids, LabelMap) else LabelMap.from_ids(category_ids)  # fmt: skip
    records = []
    for pred in predictions:
        labels = np.asarray(_numpy(pred["labels"])).reshape(-1)
        records += coco_records(int(pred["image_id"]), pred["boxes"], label_map.to_ids(labels), pred["scores"], pred.get("masks"), mask_threshold)  # fmt: skip
    return records


def coco_records(
    image_id: int,
    boxes: Any,
    category_ids: Sequence[int],
    scores: Any,
    masks: Any = None,
    mask_threshold: float = 0.5,
) -> list[dict[str, Any]]:
    """One image's detections (xyxy boxes, dataset category ids, scores[, mask probabilities
    [M,(1,)H,W]]) -> COCO result records (xywh boxes, RLE masks)."""
    boxes = np.asarray(_numpy(boxes), dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(_numpy(scores), dtype=np.float64).reshape(-1)
    if masks is not None:
        masks = _numpy(masks)
        masks = masks.reshape(len(boxes), *masks.shape[-2:]) >= mask_threshold
    records = []
    for j in range(len(boxes)):
        x1, y1, x2, y2 = (float(v) for v in boxes[j])
        rec = {
            "image_id": int(image_id),
            "category_id": int(category_ids[j]),
            "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
            "score": round(float(scores[j]), 5),
        }
        if masks is not None:
            rec["segmentation"] = encode_mask(masks[j])
        records.append(rec)
    return records


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _api(backend: str) -> tuple[Any, Any]:
    if check_backend(backend) == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    from faster_coco_eval import COCO, COCOeval_faster

    return COCO, COCOeval_faster


def evaluate(
    gt: str | Path,
    results: str | Path | list[dict[str, Any]],
    iou_types: Sequence[str] = ("bbox",),
    backend: str = "faster_coco_eval",
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCOeval summary of ``results`` against the ground-truth file ``gt``.

    ``image_ids`` restricts evaluation to those images (default: every image of ``gt``). With no
    detections at all, every number is 0 (COCOeval cannot load an empty result list).
    """
    coco_cls, eval_cls = _api(backend)
    gt_path = Path(gt)
    if not gt_path.is_file():
        raise DataError(f"COCO ground-truth file not found: {gt_path}")
    if isinstance(results, str | Path):
        results = json.loads(Path(results).read_text())
    prefix = len(iou_types) > 1
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # both backends print their tables
        coco_gt = coco_cls(str(gt_path))
        for iou_type in iou_types:
            names = [f"{iou_type}_{n}" if prefix else n for n in STAT_NAMES]
            if not results:
                out.update(dict.fromkeys(names, 0.0))
                continue
            coco_dt = coco_gt.loadRes(_copy(results))
            ev = eval_cls(coco_gt, coco_dt, iouType=iou_type)
            if image_ids is not None:
                ev.params.imgIds = sorted(int(i) for i in image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            out.update({n: float(v) for n, v in zip(names, ev.stats[:12], strict=True)})
    return out


def _copy(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """loadRes mutates records (adds area, id, and for boxes a segmentation): give it copies."""
    return [dict(r) for r in results]


def write_results(path: str | Path, results: list[dict[str, Any]]) -> Path:
    """Write COCO results json atomically (never half a file after a crash); returns the path."""
    path = Path(path)
    with atomic_open(path) as file:
        file.write(json.dumps(results))
    return path
