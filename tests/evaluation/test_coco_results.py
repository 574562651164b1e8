"""COCO export and evaluation helpers: format conversion, backends agreeing with pycocotools."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tests.tasks.conftest import write_crafted_coco
from visionkit.errors import ConfigError, DataError
from visionkit.evaluation.coco_results import STAT_NAMES, evaluate, to_coco_results


def test_to_coco_results_maps_ids_boxes_and_masks() -> None:
    masks = torch.zeros(2, 1, 6, 8)
    masks[0, 0, 1:3, 2:5] = 0.8
    masks[1, 0, 4:, :] = 0.3  # below the threshold: empty mask
    pred = {
        "image_id": 42,
        "boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0], [0.5, 4.0, 8.0, 6.0]]),
        "labels": torch.tensor([1, 0]),
        "scores": torch.tensor([0.9, 0.2]),
        "masks": masks,
    }
    records = to_coco_results([pred], category_ids=[7, 12])
    assert [r["category_id"] for r in records] == [12, 7]
    assert records[0]["bbox"] == [2.0, 1.0, 3.0, 2.0] and records[1]["bbox"] == [0.5, 4.0, 7.5, 2.0]
    assert all(r["image_id"] == 42 for r in records)
    decoded = mask_utils.decode({**records[0]["segmentation"], "counts": records[0]["segmentation"]["counts"].encode()})  # fmt: skip
    np.testing.assert_array_equal(decoded, (masks[0, 0] >= 0.5).numpy().astype(np.uint8))
    assert mask_utils.area(records[1]["segmentation"]) == 0
    json.dumps(records)  # JSON-ready


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_evaluate_equals_pycocotools_and_handles_no_detections(
    tmp_path: Path, backend: str
) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root = write_crafted_coco(tmp_path / "c")
    gt = root / "annotations" / "instances_test.json"
    data = json.loads(gt.read_text())
    rng = np.random.default_rng(0)
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.1, 1)),
         "bbox": [v + float(rng.uniform(-3, 3)) for v in a["bbox"]]}
        for a in data["annotations"]
    ]  # fmt: skip
    got = evaluate(gt, dets, ("bbox",), backend)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes([dict(d) for d in dets]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert [got[n] for n in STAT_NAMES] == pytest.approx(list(ev.stats), abs=1e-4)
    assert set(evaluate(gt, [], ("bbox", "segm"), backend).values()) == {0.0}


def test_evaluate_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="backend"):
        evaluate(tmp_path / "gt.json", [], ("bbox",), "detectron")
    with pytest.raises(DataError, match=r"gt\.json"):
        evaluate(tmp_path / "gt.json", [], ("bbox",), "pycocotools")


@contextlib.contextmanager
def info_logging_to_stderr():
    """Root logging at INFO to the current stderr, as Hydra's job logging configures a run."""
    import logging
    import sys

    root = logging.getLogger()
    handler, level = logging.StreamHandler(sys.stderr), root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_evaluation_is_silent_but_warnings_and_our_messages_show(
    tmp_path: Path, backend: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Neither backend prints nor logs its tables (evaluate() and the torchmetrics validation
    metric); a backend warning and visionkit's own INFO messages still reach the log."""
    import logging

    from torchmetrics.detection import MeanAveragePrecision

    root = write_crafted_coco(tmp_path / "c")
    gt = root / "annotations" / "instances_test.json"
    data = json.loads(gt.read_text())
    dets = [{**{k: a[k] for k in ("image_id", "category_id", "bbox", "segmentation")}, "score": 0.9} for a in data["annotations"]]  # fmt: skip
    box = torch.tensor([[1.0, 2.0, 20.0, 30.0]])
    capfd.readouterr()
    with info_logging_to_stderr():
        metrics = evaluate(gt, dets, ("bbox", "segm"), backend)
        metric = MeanAveragePrecision(iou_type="bbox", backend=backend)
        metric.update([{"boxes": box, "scores": torch.tensor([0.8]), "labels": torch.tensor([0])}], [{"boxes": box, "labels": torch.tensor([0])}])  # fmt: skip
        map_50 = float(metric.compute()["map_50"])
        assert capfd.readouterr() == ("", "")
        logging.getLogger("faster_coco_eval.core.cocoeval").warning("a backend warning")
        logging.getLogger("visionkit.data.validation").info("our message")
        assert capfd.readouterr().err.splitlines() == ["a backend warning", "our message"]
    assert metrics["bbox_map_50"] == pytest.approx(1.0) and map_50 == pytest.approx(1.0)
