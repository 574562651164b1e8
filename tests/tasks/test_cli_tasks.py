"""Each task as a user runs it (subprocess): train a few steps, then `test` and `predict` outputs."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CLI

TINY = [
    "trainer.max_epochs=1",
    "++trainer.limit_train_batches=2",
    "++trainer.limit_val_batches=1",
    "++trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
    "data.num_workers=0",
    "data.image_size=48",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "model.backbone.channels=[8,8,16,16]",
]
TASKS = {
    "semantic_segmentation": ["val/mIoU", "val/pixel_acc", "test/mIoU", "test/per_class_iou"],
    "detection": ["val/map", "val/map_50", "test/map", "test/map_50", "test/detections"],
    "instance_segmentation": ["val/segm_map", "val/bbox_map", "test/segm_map_50", "test/bbox_map"],
}

# error analysis after test: results.json keys and pictures (visionkit.evaluation.error_analysis)
ANALYSIS = {
    "semantic_segmentation": (
        ["test/pixel_confusion"],
        ["iou_per_class_test.png", "pixel_confusion_test.png"],
    ),
    "detection": (
        ["test/per_class_ap", "test/confusion"],
        ["pr_curves_test.png", "detection_confusion_test.png"],
    ),
    "instance_segmentation": (
        ["test/per_class_ap", "test/confusion"],
        ["pr_curves_bbox_test.png", "pr_curves_segm_test.png", "detection_confusion_test.png"],
    ),
}


def extra(task: str) -> list[str]:
    if task == "semantic_segmentation":
        return []
    return ["model.neck.out_channels=16", "model.head.representation_size=32"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_trains_tests_and_predicts(cli: CLI, tmp_path: Path, task: str) -> None:
    run = tmp_path / "run"
    cli("train", f"task={task}", *TINY, *extra(task), f"hydra.run.dir={run}", check=True)
    results = json.loads((run / "results.json").read_text())
    for key in TASKS[task]:
        assert key in results, (key, sorted(results))
    assert (run / "checkpoints" / "best.ckpt").is_file()
    keys, pictures = ANALYSIS[task]
    assert set(keys) <= set(results), sorted(results)
    for name in [*pictures, "learning_curves.png"]:
        assert (run / name).read_bytes()[:4] == b"\x89PNG", name
    assert {str(run / name) for name in pictures} <= set(results["figures"])
    if task == "semantic_segmentation":  # the pixel matrix is the one the test IoUs come from
        pixels = results["test/pixel_confusion"]
        matrix = np.array(pixels["matrix"], dtype=float)
        union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
        iou = {n: (None if u == 0 else float(tp / u)) for n, tp, u in zip(pixels["labels"], np.diag(matrix), union, strict=True)}  # fmt: skip
        assert iou == pytest.approx(results["test/per_class_iou"])
    else:  # per-class APs are the terms of the test mAP (COCOeval, either backend)
        table = results["test/per_class_ap"] if task == "detection" else results["test/per_class_ap"]["bbox"]  # fmt: skip
        aps = [row["ap"] for row in table.values() if row["ap"] is not None]
        assert np.mean(aps) == pytest.approx(results["test/map" if task == "detection" else "test/bbox_map"], abs=1e-6)  # fmt: skip
    # the training metric of the learning curves is the task's own (mIoU, map_50, segm_map_50)
    assert results["learning_curves"]["train_metric"][0] is not None
    monitored = {"semantic_segmentation": "mIoU", "detection": "map_50", "instance_segmentation": "segm_map_50"}  # fmt: skip
    assert results["diagnosis"]["metric"] == monitored[task]
    if task != "semantic_segmentation":
        assert set(results["test/per_class_ap"] if task == "detection" else results["test/per_class_ap"]["bbox"]) == set(results["test/confusion"]["labels"][:-1])  # fmt: skip
    overlays = sorted((run / "overlays").glob("epoch000_*.png"))
    assert len(overlays) == 4 and overlays[0].read_bytes()[:4] == b"\x89PNG"
    if task != "semantic_segmentation":
        dets = json.loads((run / "detections.json").read_text())
        ids = {c["id"] for c in json.loads(Path(results["test/ground_truth"]).read_text())["categories"]}  # fmt: skip
        assert all(d["category_id"] in ids and len(d["bbox"]) == 4 for d in dets)
    # predict on pictures of other sizes and modes
    from PIL import Image

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    Image.new("L", (37, 53), 90).save(inputs / "gray.png")
    Image.new("RGBA", (70, 31), (200, 10, 10, 128)).save(inputs / "rgba.png")
    pred = tmp_path / "pred"
    ckpt = run / "checkpoints" / "best.ckpt"
    cli("predict", f"ckpt_path={ckpt}", f"input={inputs}", *TINY, f"hydra.run.dir={pred}", check=True)  # fmt: skip
    for name, size in (("gray", (37, 53)), ("rgba", (70, 31))):
        with Image.open(pred / "predictions" / f"{name}.png") as picture:
            assert (picture.mode, picture.size) == ("RGB", size)
    if task != "semantic_segmentation":
        images = json.loads((pred / "images.json").read_text())
        assert {im["id"] for im in images} == {1, 2}
        assert isinstance(json.loads((pred / "detections.json").read_text()), list)
    else:
        assert (pred / "labels" / "gray.png").is_file()


def test_ddp_test_gathers_every_image_once(cli: CLI, tmp_path: Path) -> None:
    """`test` on 2 gloo processes: detections of both ranks in one file, the sampler's padding
    (7 images on 2 ranks) removed, and the same mAP as one process."""
    run = tmp_path / "run"
    cli("train", "task=detection", *TINY, *extra("detection"), "test_after_fit=false", f"hydra.run.dir={run}", check=True)  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    common = [*TINY, "data.num_test=7", "++trainer.limit_test_batches=null", "model.head.score_thresh=0.0"]  # fmt: skip
    outputs = {}
    for name, devices in (("single", []), ("ddp", ["trainer.devices=2", "trainer.strategy=ddp"])):
        out = tmp_path / name
        cli("test", "task=detection", f"ckpt_path={ckpt}", *common, *devices, f"hydra.run.dir={out}", check=True)  # fmt: skip
        results = json.loads((out / "results.json").read_text())
        detections = json.loads((out / "detections.json").read_text())
        outputs[name] = results, detections
    (single, single_dets), (ddp, ddp_dets) = outputs["single"], outputs["ddp"]
    per_image = [sorted(Counter(d["image_id"] for d in dets).items()) for dets in (single_dets, ddp_dets)]  # fmt: skip
    assert per_image[0] == per_image[1] and single_dets
    gt = json.loads(Path(ddp["test/ground_truth"]).read_text())
    assert len(gt["images"]) == 7
    assert abs(single["test/map"] - ddp["test/map"]) < 1e-4


def test_predict_needs_an_input(cli: CLI, tmp_path: Path) -> None:
    proc = cli("predict", "ckpt_path=missing.ckpt", f"input={tmp_path / 'nothing'}")
    assert proc.returncode != 0
    assert "input" in proc.stderr and "Traceback" not in proc.stderr
