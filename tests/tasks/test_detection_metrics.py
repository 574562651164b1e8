"""The test mAP in results equals pycocotools' COCOeval on (ground-truth file, detections.json).

A fake model returns crafted detections (jittered ground truth, wrong classes, false positives,
hits inside crowd regions) in the coordinates of the image it receives, so an evaluation resize
must be undone by the export; the crafted set has non-contiguous category and image ids, crowd
regions and images without objects.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from tests.tasks.conftest import IMAGES, TINY_DET_MODEL
from visionkit.registries import DATASETS, TASKS

STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")  # fmt: skip


def fake_detections(image: torch.Tensor, with_masks: bool, label_of: dict[int, int]) -> dict:
    """Crafted detections for the crafted image ``image`` (identified by its colour)."""
    index = round((float(image[0].mean()) * 255 - 10) / 20)
    image_id = list(IMAGES)[index]
    w, h, objects = IMAGES[image_id]
    sy, sx = image.shape[1] / h, image.shape[2] / w  # evaluation resize, if any
    rng = np.random.default_rng(image_id)
    boxes, labels, scores = [], [], []
    for k, (cat, x, y, bw, bh, crowd) in enumerate(objects):
        jitter = rng.uniform(-2, 2, 4)
        box = [x + jitter[0], y + jitter[1], x + bw + jitter[2], y + bh + jitter[3]]
        wrong = (k == 2) and not crowd  # one confused class
        boxes.append(box)
        labels.append(label_of[cat] if not wrong else (label_of[cat] + 1) % 3)
        scores.append(float(rng.uniform(0.3, 0.99)))
    for _ in range(2):  # false positives
        x, y = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        boxes.append([x, y, x + rng.uniform(4, w / 2), y + rng.uniform(4, h / 2)])
        labels.append(int(rng.integers(0, 3)))
        scores.append(float(rng.uniform(0.05, 0.6)))
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    b[:, 0::2] = b[:, 0::2].clamp(0, w) * sx
    b[:, 1::2] = b[:, 1::2].clamp(0, h) * sy
    out = {"boxes": b, "labels": torch.tensor(labels), "scores": torch.tensor(scores)}
    if with_masks:
        masks = torch.zeros(len(b), 1, image.shape[1], image.shape[2])
        for j, (x1, y1, x2, y2) in enumerate(b.round().int().tolist()):
            masks[j, 0, y1:y2, x1 + 1 : x2] = 0.9  # a little narrower than the box
        out["masks"] = masks
    return out


def run_test_loop(root: Path, out: Path, task_name: str, backend: str, resize: bool) -> dict:
    data = {
        "name": "coco",
        "root": str(root),
        "images": "{split}",
        "num_workers": 0,
        "batch_size": 2,
        "verify_images": "none",
        "eval_transforms": [{"name": "resize", "size": [32, 40]}] if resize else None,
    }
    dm = DATASETS.build(data, task=task_name)
    dm.prepare_data()
    dm.setup("test")
    model = dict(TINY_DET_MODEL)
    if task_name == "instance_segmentation":
        model["head"] = {**model["head"], "name": "maskrcnn", "mask_channels": 4}
    task = TASKS.get(task_name)(
        model=model, num_classes=dm.num_classes, label_map=dm.label_map.to_dict(),
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        metric_backend=backend,
    )  # fmt: skip
    label_of = {cid: i for i, cid in enumerate(dm.label_map.ids)}
    with_masks = task_name == "instance_segmentation"
    task.forward = lambda images: [fake_detections(im, with_masks, label_of) for im in images]
    trainer = pl.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(out),
    )  # fmt: skip
    logged = trainer.test(task, datamodule=dm, verbose=False)[0]
    return {"logged": logged, "extra": task.extra_results("test"), "gt": dm.annotation_file("test")}


def cocoeval(gt: Path, dets: Path, iou_type: str) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt))
        ev = COCOeval(coco, coco.loadRes(str(dets)), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("resize", [False, True], ids=["original", "eval-resize"])
@pytest.mark.parametrize("task_name", ["detection", "instance_segmentation"])
def test_test_map_equals_pycocotools_on_exported_detections(
    crafted_coco: Path, tmp_path: Path, task_name: str, backend: str, resize: bool
) -> None:
    res = run_test_loop(crafted_coco, tmp_path / "run", task_name, backend, resize)
    dets_path = Path(res["extra"]["test/detections"])
    assert dets_path == tmp_path / "run" / "detections.json"
    dets = json.loads(dets_path.read_text())
    assert {d["category_id"] for d in dets} <= {3, 7, 12}
    assert {d["image_id"] for d in dets} == set(IMAGES)
    assert res["extra"]["test/evaluated_all_images"] is True
    iou_types = ["bbox", "segm"] if task_name == "instance_segmentation" else ["bbox"]
    if task_name == "instance_segmentation":
        assert all("counts" in d["segmentation"] for d in dets)
    for iou_type in iou_types:
        expected = cocoeval(res["gt"], dets_path, iou_type)
        prefix = f"{iou_type}_" if len(iou_types) > 1 else ""
        got = [res["logged"][f"test/{prefix}{name}"] for name in STATS]
        assert got == pytest.approx(expected, abs=1e-4), iou_type
        # not a trivial agreement: the crafted detections score between 0 and 1
        assert 0.3 < expected[1] < 1.0, expected


def test_detections_are_in_original_image_pixels(crafted_coco: Path, tmp_path: Path) -> None:
    plain = run_test_loop(crafted_coco, tmp_path / "a", "detection", "pycocotools", False)
    resized = run_test_loop(crafted_coco, tmp_path / "b", "detection", "pycocotools", True)
    a = json.loads(Path(plain["extra"]["test/detections"]).read_text())
    b = json.loads(Path(resized["extra"]["test/detections"]).read_text())
    assert len(a) == len(b)
    for da, db in zip(a, b, strict=True):
        assert da["image_id"] == db["image_id"] and da["category_id"] == db["category_id"]
        assert da["bbox"] == pytest.approx(db["bbox"], abs=0.05)
