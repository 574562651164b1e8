"""CocoEvaluator without a Lightning trainer: detections.json in the original image's pixels, the
ground truth written from the targets when the data has no COCO file, pycocotools as the oracle."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from visionkit.data.labels import LabelMap
from visionkit.evaluation.coco_evaluator import CocoEvaluator


def test_evaluator_undoes_resizes_writes_files_and_equals_pycocotools(tmp_path: Path) -> None:
    label_map = LabelMap.from_categories([{"id": 3, "name": "a"}, {"id": 9, "name": "b"}])
    ev = CocoEvaluator(label_map, ("bbox",), "pycocotools", 0.5, tmp_path)
    ev.reset("test", None, None)
    # image 5: 40x60 original seen at 20x30 (sizes known only when a COCO file exists: none here)
    images = [torch.zeros(3, 20, 30), torch.zeros(3, 16, 16)]
    t = torch.tensor
    targets = [
        {"image_id": t(5), "boxes": t([[2.0, 2.0, 10.0, 12.0]]), "labels": t([1])},
        {
            "image_id": t(7),
            "boxes": t([[1.0, 1.0, 8.0, 8.0], [9.0, 9.0, 15.0, 15.0]]),
            "labels": t([0, 1]),
        },
    ]
    preds = [
        {"boxes": t([[2.0, 2.0, 10.0, 12.0]]), "labels": t([1]), "scores": t([0.9])},
        {
            "boxes": t([[1.0, 1.0, 8.0, 9.0], [0.0, 0.0, 4.0, 4.0]]),
            "labels": t([0, 0]),
            "scores": t([0.8, 0.3]),
        },
    ]
    ev.process(images, preds, targets)
    summary = ev.evaluate()
    gt_file, det_file = Path(summary["ground_truth"]), Path(summary["detections"])
    assert (
        gt_file == tmp_path / "ground_truth_test.json" and det_file == tmp_path / "detections.json"
    )
    records = json.loads(det_file.read_text())
    assert [(r["image_id"], r["category_id"]) for r in records] == [(5, 9), (7, 3), (7, 3)]
    assert summary["evaluated_images"] == 2 and summary["all_images"]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        oracle = COCOeval(gt, gt.loadRes(str(det_file)), "bbox")
        oracle.evaluate(), oracle.accumulate(), oracle.summarize()
    np.testing.assert_allclose(summary["metrics"]["map"], oracle.stats[0])
    assert 0 < summary["metrics"]["map"] < 1

    # with the original sizes known (a COCO-backed datamodule), boxes go back to original pixels
    ev.reset("test", gt_file, {5: (40, 60), 7: (16, 16)})
    ev.process(images[:1], preds[:1], targets[:1])
    summary = ev.evaluate()
    assert json.loads(det_file.read_text())[0]["bbox"] == [4.0, 4.0, 16.0, 20.0]
    assert summary["evaluated_images"] == 1 and not summary["all_images"]
