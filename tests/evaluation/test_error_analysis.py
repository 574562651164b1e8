"""Error analysis against COCOeval: per-class AP terms, the confusion matrix of a crafted case."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from visionkit.errors import ConfigError
from visionkit.evaluation.coco_results import evaluate
from visionkit.evaluation.error_analysis import (
    analyse_detections,
    analyse_semantic,
    detection_confusion,
    per_class_ap,
    run_cocoeval,
)

NAMES = ["a", "b"]
# image id -> [(category, x, y, w, h, iscrowd)]
GROUND_TRUTH = {
    1: [(1, 10, 10, 20, 20, 0), (2, 50, 50, 20, 20, 0), (1, 0, 80, 20, 20, 1)],
    2: [(1, 5, 5, 30, 30, 0), (2, 60, 60, 30, 30, 0)],
    3: [],
}
DETECTIONS = [
    (1, 1, [10, 10, 20, 20], 0.90),  # correct
    (1, 1, [11, 11, 20, 20], 0.80),  # a duplicate: spurious
    (1, 1, [50, 50, 20, 20], 0.70),  # on the b object: misclassified (b as a)
    (1, 1, [0, 80, 20, 20], 0.95),  # on the crowd region: ignored, as COCOeval does
    (2, 2, [60, 60, 30, 30], 0.60),  # correct
    (2, 1, [5, 5, 30, 30], 0.30),  # correct, but below score 0.5: the a object is missed
    (3, 2, [0, 0, 10, 10], 0.55),  # nothing there: spurious
]


def write_gt(path: Path) -> Path:
    images = [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in GROUND_TRUTH]  # fmt: skip
    anns = [
        {
            "id": 10 * i + n + 1,
            "image_id": i,
            "category_id": c,
            "bbox": [x, y, w, h],
            "area": w * h,
            "iscrowd": crowd,
        }
        for i, objects in GROUND_TRUTH.items()
        for n, (c, x, y, w, h, crowd) in enumerate(objects)
    ]
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def results() -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s} for i, c, b, s in DETECTIONS]


def test_per_class_ap_are_the_terms_of_cocoevals_map(tmp_path: Path) -> None:
    gt = write_gt(tmp_path / "gt.json")
    table = per_class_ap(run_cocoeval(gt, results()), NAMES)
    summary = evaluate(gt, results(), backend="pycocotools")
    assert np.mean([table[n]["ap"] for n in NAMES]) == pytest.approx(summary["map"])
    assert np.mean([table[n]["ap50"] for n in NAMES]) == pytest.approx(summary["map_50"])
    assert np.mean([table[n]["ap75"] for n in NAMES]) == pytest.approx(summary["map_75"])
    for k, name in enumerate(NAMES):  # each term is COCOeval's mAP restricted to that category
        ev = run_cocoeval(gt, results())
        ev.params.catIds = [k + 1]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        assert table[name]["ap"] == pytest.approx(ev.stats[0])
        assert table[name]["ground_truth"] == 2


def test_confusion_matrix_with_background(tmp_path: Path) -> None:
    ev = run_cocoeval(write_gt(tmp_path / "gt.json"), results())
    matrix = detection_confusion(ev, iou=0.5, score=0.5)
    # rows true a, b, background; columns predicted a, b, background
    assert matrix.tolist() == [[1, 0, 1], [1, 1, 0], [1, 1, 0]]
    low = detection_confusion(ev, iou=0.5, score=0.2)
    assert low[0].tolist() == [2, 0, 0]  # the 0.3 detection now finds its object
    # every (non-crowd) object once per row; every kept, non-ignored detection once per column
    assert low[:2].sum(axis=1).tolist() == [2, 2]
    assert low[:, :2].sum(axis=0).tolist() == [4, 2]
    strict = detection_confusion(ev, iou=0.95, score=0.5)
    assert strict[0, 0] == 1 and strict.sum() == matrix.sum()
    with pytest.raises(ConfigError, match=r"error_analysis\.iou=0\.42"):
        detection_confusion(ev, iou=0.42)


def test_analysis_writes_figures_and_tables(tmp_path: Path) -> None:
    gt = write_gt(tmp_path / "gt.json")
    found = analyse_detections(gt, results(), NAMES, tmp_path, iou_types=("bbox",))
    assert [Path(f).name for f in found["figures"]] == ["pr_curves_test.png", "detection_confusion_test.png"]  # fmt: skip
    assert all(Path(f).read_bytes()[:4] == b"\x89PNG" for f in found["figures"])
    assert found["confusion"]["per_class"]["b"] == {"correct": 1, "misclassified": 1, "missed": 0, "spurious": 1}  # fmt: skip
    assert set(found["per_class_ap"]) == {"a", "b"}
    nothing = analyse_detections(gt, [], NAMES, tmp_path / "empty")  # an untrained detector
    assert nothing["confusion"]["matrix"] == [[0, 0, 2], [0, 0, 2], [0, 0, 0]]
    assert {row["ap"] for row in nothing["per_class_ap"].values()} == {0.0}
    semantic = analyse_semantic(np.array([[50, 5, 0], [10, 30, 0], [0, 0, 0]]), ["bg", "x", "y"], tmp_path)  # fmt: skip
    assert [Path(f).name for f in semantic] == [
        "iou_per_class_test.png",
        "pixel_confusion_test.png",
    ]
