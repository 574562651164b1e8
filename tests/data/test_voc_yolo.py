"""Pascal VOC and YOLO data: read into the COCO structure, same bad-data rules, VOC `difficult`
ignored in evaluation (pycocotools is the oracle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.voc.datamodule import VocDataModule
from visionkit.data.yolo.datamodule import YoloDataModule
from visionkit.errors import DataError

W, H = 40, 30


def image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def voc_xml(name: str, objects: list[tuple[str, list, int]]) -> str:
    parts = []
    for n, box, d in objects:
        coords = zip(("xmin", "ymin", "xmax", "ymax"), box or [], strict=False)
        bndbox = "<bndbox>" + "".join(f"<{t}>{v}</{t}>" for t, v in coords) + "</bndbox>" if box else ""  # fmt: skip
        parts.append(f"<object><name>{n}</name><difficult>{d}</difficult>{bndbox}</object>")
    size = f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size>"
    return f"<annotation><filename>{name}.png</filename>{size}{''.join(parts)}</annotation>"


VOC = {  # stem -> objects (name, [xmin, ymin, xmax, ymax] 1-based inclusive, difficult)
    "a": [("dog", [3, 4, 12, 20], 0), ("cat", [20, 5, 35, 25], 1)],
    "b": [("cat", [1, 1, 10, 10], 0)],
    "c": [("dog", [5, 5, 30, 28], 0), ("dog", [2, 2, 8, 8], 0)],
}


def write_voc(root: Path, voc: dict = VOC) -> Path:
    for i, (stem, objects) in enumerate(voc.items()):
        image(root / "JPEGImages" / f"{stem}.png", i)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(stem, objects))
    lists = root / "ImageSets" / "Main"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("\n".join(voc) + "\n")
    (lists / "val.txt").write_text("\n".join(voc) + "\n")
    return root


def voc_dm(root: Path, **kw) -> VocDataModule:
    dm = VocDataModule(task="detection", root=str(root), num_workers=0, image_size=32, **kw)
    dm.setup("fit")
    return dm


def test_voc_reads_boxes_classes_and_difficult(tmp_path: Path) -> None:
    dm = voc_dm(write_voc(tmp_path / "voc"))
    assert dm.class_names == ["cat", "dog"]
    rec = dm.indexes["val"].records[0]
    assert [a["bbox"] for a in rec.anns] == [(2.0, 3.0, 12.0, 20.0), (19.0, 4.0, 35.0, 25.0)]
    assert [a["iscrowd"] for a in rec.anns] == [0, 1]  # difficult -> crowd (ignored)


def test_voc_difficult_is_ignored_by_cocoeval(tmp_path: Path) -> None:
    """A detection on a difficult object is neither a hit nor a false positive (VOC's rule)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dm = voc_dm(write_voc(tmp_path / "voc"))
    gt_file = dm.ground_truth_file("val", tmp_path)
    gt = json.loads(Path(gt_file).read_text())
    dets = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in gt["annotations"]
    ]  # every object found, the difficult one too
    assert sum(a["iscrowd"] for a in gt["annotations"]) == 1
    coco = COCO(str(gt_file))
    ev = COCOeval(coco, coco.loadRes(dets), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP50: no false positive from the difficult one
    gt["annotations"] = [{**a, "iscrowd": 0} for a in gt["annotations"]]
    gt_file.write_text(json.dumps(gt))
    coco = COCO(str(gt_file))
    missed = [d for d in dets if not (d["image_id"] == 1 and d["category_id"] == 1)]
    ev = COCOeval(coco, coco.loadRes(missed), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[1] < 1.0  # the same miss counts when the object is not difficult


def test_voc_bad_object_names_file_and_skip_counts(tmp_path: Path) -> None:
    bad = {**VOC, "b": [("cat", [1, 1, 10, 10], 0), ("dog", None, 0)]}
    root = write_voc(tmp_path / "voc", bad)
    with pytest.raises(DataError, match=r"b\.xml: object 2.*bndbox"):
        voc_dm(root)
    dm = voc_dm(root, on_bad="skip")
    assert dm.report.skipped["malformed_box"] == 1  # one object of one file (in both split lists)
    assert len(dm.indexes["train"].records[1].anns) == 1


def write_yolo(root: Path, lines: dict[str, list[str]], names: str = "data.yaml") -> Path:
    for i, (stem, rows) in enumerate(lines.items()):
        for split in ("train", "val"):
            image(root / "images" / split / f"{stem}.png", i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text("\n".join(rows) + "\n")
    if names == "data.yaml":
        (root / "data.yaml").write_text("names:\n  0: circle\n  1: square\n")
    else:
        (root / "classes.txt").write_text("circle\nsquare\n")
    return root


POLYGONS = {
    "p": ["0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6", "1 0.6 0.2 0.9 0.2 0.75 0.9"],
    "q": ["1 0.2 0.3 0.6 0.3 0.6 0.8"],
}


@pytest.mark.parametrize("names", ["data.yaml", "classes.txt"])
def test_yolo_boxes_and_polygons(tmp_path: Path, names: str) -> None:
    root = write_yolo(tmp_path / "yolo", {"b": ["0 0.5 0.5 0.5 0.4", "1 0.25 0.25 0.2 0.2"]}, names)
    dm = YoloDataModule(task="detection", root=str(root), num_workers=0, image_size=32)
    dm.setup("fit")
    assert dm.class_names == ["circle", "square"]
    rec = dm.indexes["train"].records[0]
    np.testing.assert_allclose([a["bbox"] for a in rec.anns], [[10, 9, 30, 21], [6, 4.5, 14, 10.5]])  # fmt: skip
    assert [a["category_id"] for a in rec.anns] == [1, 2]


def test_yolo_polygons_become_instance_masks(tmp_path: Path) -> None:
    from pycocotools import mask as mask_utils

    root = write_yolo(tmp_path / "yolo", POLYGONS)
    dm = YoloDataModule(task="instance_segmentation", root=str(root), num_workers=0, image_size=32)
    dm.setup("fit")
    raw = dm.indexes["train"]
    ds = dm._dataset("train")
    target = ds.target(raw.records[0])
    poly = [v * (W if i % 2 == 0 else H) for i, v in enumerate([0.1, 0.1, 0.5, 0.1, 0.5, 0.6, 0.1, 0.6])]  # fmt: skip
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], H, W)))
    assert torch.equal(target["masks"][0], torch.from_numpy(expected))
    assert target["labels"].tolist() == [0, 1]


@pytest.mark.parametrize(
    "lines,message",
    [
        (["0 0.5 0.5 0.2"], r"b\.txt: line 1: 3 coordinates"),
        (["0 0.5 0.5 0.2 0.2", "7 0.5 0.5 0.2 0.2"], r"b\.txt: line 2: class 7 is not in 0\.\.1"),
        (["0 0.5 0.5 1.5 0.2"], r"b\.txt: line 1: coordinates must be normalised"),
    ],
)
def test_yolo_bad_line_names_file_and_line(tmp_path: Path, lines: list[str], message: str) -> None:
    root = write_yolo(tmp_path / "yolo", {"b": lines, "ok": ["1 0.5 0.5 0.2 0.2"]})
    with pytest.raises(DataError, match=message):
        YoloDataModule(task="detection", root=str(root), num_workers=0).setup("fit")
    dm = YoloDataModule(task="detection", root=str(root), num_workers=0, on_bad="skip")
    dm.setup("fit")
    assert sum(dm.report.skipped.values()) == 2  # the bad line in train and in val, counted


def test_yolo_box_line_in_instance_segmentation_is_named(tmp_path: Path) -> None:
    root = write_yolo(tmp_path / "yolo", {"b": ["0 0.5 0.5 0.2 0.2"]})
    with pytest.raises(DataError, match=r"b\.txt: line 1: a box line.*polygon"):
        YoloDataModule(task="instance_segmentation", root=str(root), num_workers=0).setup("fit")


def test_voc_instance_masks_from_segmentation_object(tmp_path: Path) -> None:
    """SegmentationObject PNG: value k is the XML's k-th object (255 void); missing pixels named."""
    root = write_voc(tmp_path / "voc")
    folder = root / "SegmentationObject"
    folder.mkdir()
    masks = {}
    for stem, objects in VOC.items():
        png = np.zeros((H, W), np.uint8)
        for k, (_, (x0, y0, x1, y1), _) in enumerate(objects, start=1):
            png[y0 - 1 : y1, x0 - 1 : x1] = k
        png[0, :] = 255  # void border pixels belong to no object
        masks[stem] = png
        im = Image.fromarray(png, mode="P")
        im.putpalette([0, 0, 0] * 256)
        im.save(folder / f"{stem}.png")
    dm = VocDataModule(task="instance_segmentation", root=str(root), num_workers=0, image_size=32)
    dm.setup("fit")
    rec = dm.indexes["train"].records[2]  # "c": two dogs, the second painted over the first
    target = dm._dataset("train").target(rec)
    for k in (1, 2):
        assert torch.equal(target["masks"][k - 1], torch.from_numpy((masks["c"] == k).astype(np.uint8)))  # fmt: skip
    bad = masks["b"].copy()
    bad[bad == 1] = 0  # object 1 of b.xml has no pixel left
    Image.fromarray(bad).save(folder / "b.png")
    with pytest.raises(
        DataError, match=r"b\.xml: object 1 \(cat\): .*b\.png has no pixel of value 1"
    ):
        VocDataModule(task="instance_segmentation", root=str(root), num_workers=0).setup("fit")


def test_yolo_labels_of_rle_masks_need_boxes_only_and_crowd_is_refused(tmp_path: Path) -> None:
    """An RLE mask has no YOLO polygon: refused naming --boxes, written as its box with
    polygons off; a crowd region has no YOLO form either way."""
    from visionkit.data.yolo.reader import write_yolo as write_labels

    rle = {"size": [40, 80], "counts": "abc"}
    ann = {"id": 5, "image_id": 1, "category_id": 3, "bbox": [8, 4, 16, 20], "segmentation": rle}
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 80, "height": 40}],
            "annotations": [ann], "categories": [{"id": 3, "name": "ant"}]}  # fmt: skip
    with pytest.raises(DataError, match=r"annotation id 5: an RLE mask .*--boxes"):
        write_labels(data, tmp_path / "poly")
    assert write_labels(data, tmp_path / "boxes", polygons=False) == ["ant"]
    assert (tmp_path / "boxes" / "a.txt").read_text() == "0 0.2 0.35 0.2 0.5\n"
    data["annotations"] = [{**ann, "iscrowd": 1}]
    with pytest.raises(DataError, match="annotation id 5: crowd regions have no YOLO form"):
        write_labels(data, tmp_path / "crowd", polygons=False)
