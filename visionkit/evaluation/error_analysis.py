"""Error analysis of detection and semantic segmentation results, from COCOeval's own matches.

Detection (:func:`analyse_detections`), on a pycocotools ``COCOeval`` that has run ``evaluate()``
and ``accumulate()``:

* per-class AP (``eval['precision']`` averaged over IoU thresholds and recall points, area "all",
  the largest maxDets: the per-class terms whose mean is COCO's mAP), AP50, AP75;
* precision-recall curves per class at IoU 0.5 (and 0.75);
* a confusion matrix with a background row and column at one IoU threshold and a minimum score:
  COCOeval's same-class matches (``evalImgs[...]['dtMatches']``) are the diagonal; a detection it
  left unmatched that overlaps a still unmatched ground truth of another class by at least the IoU
  is *misclassified* (that class's row), otherwise *spurious* (background row); ground truth left
  over is *missed* (background column). Crowd regions and what COCOeval ignores are left out.

Semantic segmentation (:func:`analyse_semantic`): per-class IoU bars and the pixel confusion
matrix, from the confusion matrix the task's metrics come from.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import ConfigError


def run_cocoeval(
    gt_file: str | Path,
    results: list[dict[str, Any]],
    iou_type: str = "bbox",
    image_ids: Sequence[int] | None = None,
) -> Any:
    """pycocotools COCOeval of ``results`` on ``gt_file``, evaluated and accumulated (quietly)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        dt = gt.loadRes([dict(r) for r in results]) if results else COCO()
        if not results:
            dt.dataset = {"images": gt.dataset["images"], "annotations": [], "categories": gt.dataset["categories"]}  # fmt: skip
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType=iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
    return ev


def _all_area_last_maxdet(ev: Any) -> tuple[int, int]:
    return ev.params.areaRngLbl.index("all"), len(ev.params.maxDets) - 1


def _iou_index(ev: Any, iou: float) -> int:
    thresholds = np.asarray(ev.params.iouThrs)
    found = np.flatnonzero(np.isclose(thresholds, iou))
    if not len(found):
        raise ConfigError(
            f"error_analysis.iou={iou} is not one of COCOeval's IoU thresholds "
            f"{[round(float(t), 2) for t in thresholds]}"
        )
    return int(found[0])


def per_class_ap(ev: Any, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{class name: {"ap", "ap50", "ap75", "ground_truth"}}`` from ``ev.eval['precision']``;
    AP is None for a class without ground truth (COCOeval leaves it out of the mean too)."""
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    a, m = _all_area_last_maxdet(ev)
    t50, t75 = _iou_index(ev, 0.5), _iou_index(ev, 0.75)
    table = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, a, m]
        valid = p[p > -1]

        def mean(x: np.ndarray) -> float | None:
            x = x[x > -1]
            return float(x.mean()) if x.size else None

        gts = ev.cocoGt.getAnnIds(catIds=[cat], imgIds=ev.params.imgIds, iscrowd=False)
        table[names[k]] = {
            "ap": float(valid.mean()) if valid.size else None,
            "ap50": mean(p[t50]),
            "ap75": mean(p[t75]),
            "ground_truth": len(gts),
        }
    return table


def detection_confusion(ev: Any, iou: float = 0.5, score: float = 0.5) -> np.ndarray:
    """``[K+1, K+1]`` counts, rows true class (last: background), columns predicted class (last:
    background), from ``ev``'s matches at IoU ``iou`` among detections scoring >= ``score``."""
    from pycocotools import mask as mask_utils

    t = _iou_index(ev, iou)
    a, _ = _all_area_last_maxdet(ev)
    cats, images = list(ev.params.catIds), list(ev.params.imgIds)
    k_count, n_areas, n_images = len(cats), len(ev.params.areaRng), len(images)
    matrix = np.zeros((k_count + 1, k_count + 1), np.int64)
    background = k_count
    for i in range(n_images):
        unmatched_dt: list[tuple[float, int, int]] = []  # (score, class, detection id)
        open_gt: dict[int, int] = {}  # ground-truth id -> class, not matched yet
        for k in range(k_count):
            e = ev.evalImgs[k * n_areas * n_images + a * n_images + i]
            if e is None:
                continue
            for gt_id, ignored in zip(e["gtIds"], e["gtIgnore"], strict=True):
                if not ignored:
                    open_gt[int(gt_id)] = k
            matches, ignored = e["dtMatches"][t], e["dtIgnore"][t]
            for j, dt_id in enumerate(e["dtIds"]):
                if e["dtScores"][j] < score or ignored[j]:
                    continue
                if matches[j] > 0:
                    matrix[k, k] += 1
                    open_gt.pop(int(matches[j]), None)
                else:
                    unmatched_dt.append((float(e["dtScores"][j]), k, int(dt_id)))
        # detections COCOeval left unmatched: a ground truth of another class, or nothing
        for _, k, dt_id in sorted(unmatched_dt, key=lambda d: -d[0]):
            others = [g for g, c in open_gt.items() if c != k]
            if others:
                box = [ev.cocoDt.anns[dt_id]["bbox"]]
                gt_boxes = [ev.cocoGt.anns[g]["bbox"] for g in others]
                ious = mask_utils.iou(box, gt_boxes, [0] * len(others))[0]
                best = int(np.argmax(ious))
                if ious[best] >= iou:
                    matrix[open_gt.pop(others[best]), k] += 1
                    continue
            matrix[background, k] += 1
        for k in open_gt.values():
            matrix[k, background] += 1
    return matrix


def confusion_summary(matrix: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per class: correct, misclassified (as another class), missed, spurious detections."""
    k = len(names)
    return {
        name: {
            "correct": int(matrix[i, i]),
            "misclassified": int(matrix[i, :k].sum() - matrix[i, i]),
            "missed": int(matrix[i, k]),
            "spurious": int(matrix[k, i]),
        }
        for i, name in enumerate(names)
    }


def plot_matrix(counts: np.ndarray, rows: Sequence[str], cols: Sequence[str], path: str | Path, title: str, xlabel: str = "predicted", ylabel: str = "true") -> Path:  # fmt: skip
    """A count matrix, shaded by row share, with the counts written in the cells."""
    from visionkit.figures import pyplot, save_figure

    plt = pyplot()
    counts = np.asarray(counts)
    shares = counts / counts.sum(axis=1, keepdims=True).clip(min=1)
    size = max(4.0, 0.55 * max(len(rows), len(cols)) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    big = counts.max(initial=0) >= 10_000
    for i in range(len(rows)):
        for j in range(len(cols)):
            text = f"{counts[i, j] / counts.sum():.1%}" if big else str(int(counts[i, j]))
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if shares[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_title(title)
    return save_figure(fig, path)


def plot_pr_curves(ev: Any, names: Sequence[str], path: str | Path, ious: Sequence[float] = (0.5, 0.75)) -> Path:  # fmt: skip
    """Precision against recall per class (area all, largest maxDets), one panel per IoU."""
    from visionkit.figures import pyplot, save_figure

    plt = pyplot()
    precision = ev.eval["precision"]
    a, m = _all_area_last_maxdet(ev)
    recall = np.asarray(ev.params.recThrs)
    fig, axes = plt.subplots(1, len(ious), figsize=(5.5 * len(ious), 4.5), squeeze=False)
    for ax, iou in zip(axes[0], ious, strict=True):
        t = _iou_index(ev, iou)
        for k, name in enumerate(names):
            p = precision[t, :, k, a, m]
            if (p > -1).any():
                ax.plot(recall, np.where(p > -1, p, np.nan), label=f"{name} (AP {p[p > -1].mean():.2f})")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(f"precision-recall, IoU {iou:g}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    return save_figure(fig, path)


def analyse_detections(
    gt_file: str | Path,
    results: list[dict[str, Any]],
    names: Sequence[str],
    output_dir: str | Path,
    iou_types: Sequence[str] = ("bbox",),
    image_ids: Sequence[int] | None = None,
    iou: float = 0.5,
    score: float = 0.5,
    stage: str = "test",
) -> dict[str, Any]:
    """Per-class AP per IoU type, PR curves and the box confusion matrix; writes the PNGs and
    returns ``{"per_class_ap": ..., "confusion": ..., "figures": [...]}``."""
    out = Path(output_dir)
    figures: list[str] = []
    per_class: dict[str, Any] = {}
    confusion: dict[str, Any] = {}
    for iou_type in iou_types:
        ev = run_cocoeval(gt_file, results, iou_type, image_ids)
        per_class[iou_type] = per_class_ap(ev, names)
        suffix = "" if len(iou_types) == 1 else f"_{iou_type}"
        figures.append(str(plot_pr_curves(ev, names, out / f"pr_curves{suffix}_{stage}.png")))
        if iou_type == "bbox":
            matrix = detection_confusion(ev, iou, score)
            labels = [*names, "background"]
            title = f"detections at IoU {iou:g}, score >= {score:g}"
            figures.append(str(plot_matrix(matrix, labels, labels, out / f"detection_confusion_{stage}.png", title)))  # fmt: skip
            confusion = {
                "iou": iou,
                "score": score,
                "labels": labels,
                "matrix": matrix.tolist(),
                "per_class": confusion_summary(matrix, names),
            }
    return {"per_class_ap": per_class if len(iou_types) > 1 else per_class[iou_types[0]], "confusion": confusion, "figures": figures}  # fmt: skip


def analyse_semantic(matrix: Any, names: Sequence[str], output_dir: str | Path, stage: str = "test") -> list[str]:  # fmt: skip
    """Per-class IoU bars and the pixel confusion matrix (rows true) as PNGs; returns the paths."""
    from visionkit.figures import pyplot, save_figure

    counts = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(counts)
    union = counts.sum(0) + counts.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.5 * len(names) + 2), 4))
    ax.bar(range(len(names)), np.nan_to_num(iou))
    for i, v in enumerate(iou):
        ax.text(i, (0 if np.isnan(v) else v) + 0.01, "n/a" if np.isnan(v) else f"{v:.2f}", ha="center", fontsize=7)  # fmt: skip
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_title(f"IoU per class (mIoU {np.nanmean(iou) if np.isfinite(iou).any() else float('nan'):.3f})")  # fmt: skip
    out = Path(output_dir)
    bars = save_figure(fig, out / f"iou_per_class_{stage}.png")
    pixels = plot_matrix(counts.astype(np.int64), names, names, out / f"pixel_confusion_{stage}.png", "pixels (row share)")  # fmt: skip
    return [str(bars), str(pixels)]
