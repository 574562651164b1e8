"""The README's real-time detector command, as written (its placeholder root replaced by COCO data
written here, FAST appended): one CLI run; its test mAP equals pycocotools on its detections.json."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tests.commands.own_data import assert_in_original_pixels, coco_stats, write_coco
from tests.conftest import FAST, readme_commands, run_cli

STATS = ("map", "map_50", "map_75")


def test_readme_rtdet_command_trains_and_tests_on_coco(tmp_path: Path, data_dir: Path) -> None:
    (command,) = readme_commands("Real-time detection", level=3)
    assert "experiment=rtdet_n" in command and "/data/mycoco" in command
    root = write_coco(tmp_path / "coco")
    words = shlex.split(command.replace("/data/mycoco", str(root)))
    assert words[:3] == ["python", "-m", "visionkit"], command
    # two batches of training: keep every score, so that there are detections to evaluate
    extra = ["trainer.limit_test_batches=1.0", "model.head.score_thresh=0.0", "hydra.run.dir=run"]
    run_cli(*words[3:], *FAST, *extra, cwd=tmp_path, data_dir=data_dir, timeout=600, check=True)
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    config = (run / "config.yaml").read_text()
    assert "name: rtdet" in config and "name: cspnet" in config and "name: pafpn" in config
    assert results["test/evaluated_all_images"] is True
    gt_file = root / "annotations" / "instances_test.json"
    gt = json.loads(gt_file.read_text())
    dets = json.loads(Path(results["test/detections"]).read_text())
    assert len(dets) == 100 * len(gt["images"])  # detections_per_img, every image
    assert {d["category_id"] for d in dets} <= {c["id"] for c in gt["categories"]}
    assert_in_original_pixels(dets, {im["id"]: (im["width"], im["height"]) for im in gt["images"]})
    oracle = coco_stats(gt_file, dets, "bbox")
    assert [results[f"test/{k}"] for k in STATS] == pytest.approx(oracle[:3], abs=1e-4)


def test_readme_rtdet_seg_command_trains_and_tests_on_coco(tmp_path: Path, data_dir: Path) -> None:
    """The mask-prototype variant's command on COCO data with polygon masks (images of several
    sizes, resized by the head): box and mask mAP equal pycocotools on its detections.json."""
    (command,) = readme_commands("Real-time instance segmentation", level=3)
    assert "experiment=rtdet_seg_n" in command and "/data/mycoco" in command
    root = write_coco(tmp_path / "coco")
    words = shlex.split(command.replace("/data/mycoco", str(root)))
    assert words[:3] == ["python", "-m", "visionkit"], command
    extra = ["trainer.limit_test_batches=1.0", "model.head.score_thresh=0.0", "model.head.detections_per_img=20", "hydra.run.dir=run"]  # fmt: skip
    run_cli(*words[3:], *FAST, *extra, cwd=tmp_path, data_dir=data_dir, timeout=600, check=True)
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    config = (run / "config.yaml").read_text()
    assert "name: rtdet_seg" in config and "name: instance_segmentation" in config
    assert results["test/evaluated_all_images"] is True
    gt_file = root / "annotations" / "instances_test.json"
    gt = json.loads(gt_file.read_text())
    assert any(isinstance(a["segmentation"], list) for a in gt["annotations"])  # polygons
    dets = json.loads(Path(results["test/detections"]).read_text())
    assert len(dets) == 20 * len(gt["images"]) and all("segmentation" in d for d in dets)
    assert_in_original_pixels(dets, {im["id"]: (im["width"], im["height"]) for im in gt["images"]})
    for d in dets:  # each mask lies in its box (cropped there, in the image's own pixels)
        ys, xs = np.nonzero(mask_utils.decode(d["segmentation"]))
        x, y, bw, bh = d["bbox"]
        assert len(xs) == 0 or (xs.min() >= x - 1 and xs.max() <= x + bw and ys.min() >= y - 1 and ys.max() <= y + bh), d  # fmt: skip
    for iou in ("segm", "bbox"):
        oracle = coco_stats(gt_file, dets, iou)
        assert [results[f"test/{iou}_{k}"] for k in STATS] == pytest.approx(oracle[:3], abs=1e-4)
