"""The COCO reader: agreement with pycocotools, every bad-data case (error names the file, skip
counts), image modes and EXIF, and the coco datamodule for every task."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.coco.reader import ann_to_mask, load_coco
from visionkit.data.images import load_image
from visionkit.data.validation import BadDataReport, BadDataWarning
from visionkit.errors import DataError

H, W = 24, 32
CATS = [{"id": 40, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 7, "name": "bird"}]


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = mask.astype(np.uint8).flatten(order="F")
    counts, value, run = [], 0, 0
    for v in flat:
        if v == value:
            run += 1
        else:
            counts.append(run)
            value, run = v, 1
    counts.append(run)
    return {"size": [H, W], "counts": counts}


def _coco(root: Path) -> dict:
    (root / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(
            root / "train" / f"{i}.png"
        )
    block = np.zeros((H, W), bool)
    block[5:15, 10:30] = True
    crowd = np.zeros((H, W), bool)
    crowd[0:4, 0:8] = True
    anns = [
        {"id": 1, "image_id": 10, "category_id": 40, "bbox": [2, 2, 10, 8], "area": 80.0,
         "segmentation": [[2, 2, 12, 2, 12, 10, 2, 10]], "iscrowd": 0},
        {"id": 2, "image_id": 10, "category_id": 2, "bbox": [10, 5, 20, 10], "area": 200.0,
         "segmentation": _rle(block), "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 7, "bbox": [0, 0, 8, 4], "area": 32.0,
         "segmentation": _uncompressed_rle(crowd), "iscrowd": 1},
        {"id": 4, "image_id": 11, "category_id": 7, "bbox": [4, 4, 12, 12], "area": 72.0,
         "segmentation": [[4, 4, 16, 4, 10, 16]], "iscrowd": 0},
        {"id": 5, "image_id": 12, "category_id": 2, "bbox": [20, 10, 11.5, 13.5], "area": 100.0,
         "segmentation": [[20, 10, 31, 10, 31, 23, 20, 23], [22, 12, 24, 12, 24, 14]],
         "iscrowd": 0},
    ]  # fmt: skip
    data = {
        "images": [
            {"id": 10 + i, "file_name": f"{i}.png", "width": W, "height": H} for i in range(4)
        ],
        "annotations": anns,
        "categories": CATS,
    }
    (root / "annotations").mkdir(exist_ok=True)
    return data


def _write(root: Path, data: dict, split: str = "train") -> Path:
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def coco_root(tmp_path: Path) -> tuple[Path, dict]:
    data = _coco(tmp_path)
    _write(tmp_path, data)
    return tmp_path, data


def test_agrees_with_pycocotools(coco_root) -> None:
    from pycocotools.coco import COCO

    root, _ = coco_root
    ann_file = root / "annotations" / "instances_train.json"
    report = BadDataReport("error")
    index = load_coco(ann_file, root / "train", report, task="instance_segmentation")
    ref = COCO(str(ann_file))
    assert sorted(r.id for r in index.records) == sorted(ref.getImgIds())
    for rec in index.records:
        ref_anns = ref.loadAnns(ref.getAnnIds(imgIds=rec.id))
        assert [a["id"] for a in rec.anns] == [a["id"] for a in ref_anns]
        for mine, theirs in zip(rec.anns, ref_anns, strict=True):
            assert mine["area"] == theirs["area"] and mine["iscrowd"] == theirs["iscrowd"]
            x, y, w, h = theirs["bbox"]
            assert mine["bbox"] == pytest.approx((x, y, min(x + w, W), min(y + h, H)))
            assert np.array_equal(ann_to_mask(mine, H, W), ref.annToMask(theirs))
    assert report.notes["image_without_annotations"] == 1  # image 13: kept as a negative
    assert len(index.records) == 4
    assert index.label_map.ids == [2, 7, 40] and index.label_map.names == ["cat", "bird", "dog"]


def _truncated_jpeg(path: Path) -> None:
    """A JPEG cut inside its pixel data: the header parses (PIL's verify passes), decoding fails."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.7)])
    with Image.open(path) as im:
        im.verify()  # the header alone looks fine


IMAGE_KINDS = {"missing_image", "empty_image", "unreadable_image", "image_size_mismatch",
               "duplicate_image_id", "image_too_large", "malformed_image_entry"}  # fmt: skip


def _break(case: str, root: Path, data: dict) -> tuple[dict, str, int, str]:
    """Apply one bad-data case; returns (data, kind counted in skip mode, its count, text the
    error names)."""
    data = copy.deepcopy(data)
    anns, images = data["annotations"], data["images"]
    if case == "missing_image":
        (root / "train" / "1.png").unlink()
        return data, "missing_image", 1, "missing image file: " + str(root / "train" / "1.png")
    if case == "empty_image":
        (root / "train" / "1.png").write_bytes(b"")
        return data, "empty_image", 1, "image id 11: empty image file"
    if case == "truncated_png":
        raw = (root / "train" / "2.png").read_bytes()
        (root / "train" / "2.png").write_bytes(raw[: len(raw) // 2])
        return data, "unreadable_image", 1, "image id 12: unreadable or truncated image"
    if case == "truncated_jpeg":
        _truncated_jpeg(root / "train" / "2.jpg")
        images[2]["file_name"] = "2.jpg"
        return data, "unreadable_image", 1, "2.jpg: image file is truncated"
    if case == "not_an_image":
        (root / "train" / "3.png").write_bytes(b"this is not a picture")
        return data, "unreadable_image", 1, "image id 13: unreadable image"
    if case == "size_mismatch":
        images[0]["width"] = 40
        return data, "image_size_mismatch", 1, "0.png is 32x24 but the annotation file says 40x24"
    if case == "duplicate_image_id":
        images[3]["id"] = 12  # 3.png now claims 2.png's annotations: both are skipped
        return data, "duplicate_image_id", 2, "image id 12 is used by 2 images (2.png, 3.png)"
    if case == "unknown_category":
        anns[0]["category_id"] = 99
        return data, "unknown_category", 1, "annotation id 1 (image 0.png): unknown category id 99"
    if case == "box_partly_outside":
        anns[1]["bbox"] = [W - 2, 5, 20, 10]
        return (
            data,
            "box_outside_image",
            1,
            "(image 0.png): bbox [30, 5, 20, 10] lies partly outside the 32x24 image",
        )
    if case == "box_fully_outside":
        anns[1]["bbox"] = [W + 5, H + 5, 4, 4]
        return (
            data,
            "box_outside_image",
            1,
            "(image 0.png): bbox [37, 29, 4, 4] lies outside the 32x24 image",
        )
    if case == "zero_area_box":
        anns[3]["bbox"] = [4, 4, 0, 12]
        return data, "zero_area_box", 1, "annotation id 4 (image 1.png): bbox [4, 4, 0, 12]"
    if case == "negative_box":
        anns[3]["bbox"] = [4, 4, 6, -2]
        return data, "zero_area_box", 1, "annotation id 4 (image 1.png): bbox [4, 4, 6, -2]"
    if case == "malformed_box":
        anns[3]["bbox"] = [4, "4", 6, 2]
        return data, "malformed_box", 1, "annotation id 4 (image 1.png): bbox"
    if case == "empty_polygon":
        anns[0]["segmentation"] = []
        return data, "bad_segmentation", 1, "annotation id 1 (image 0.png): empty segmentation"
    if case == "malformed_polygon":
        anns[4]["segmentation"] = [[20, 10, 31]]
        return data, "bad_segmentation", 1, "annotation id 5 (image 2.png): malformed polygon"
    if case == "degenerate_polygon":
        anns[4]["segmentation"] = [[20, 10, 25, 15, 30, 20]]  # three points on one line
        return data, "bad_segmentation", 1, "annotation id 5 (image 2.png): degenerate polygon"
    if case == "rle_wrong_size":
        anns[1]["segmentation"]["size"] = [H + 1, W]
        return data, "bad_segmentation", 1, "annotation id 2 (image 0.png): RLE size [25, 32]"
    if case == "orphan_annotation":
        anns[2]["image_id"] = 555
        return data, "orphan_annotation", 1, "annotation id 3: unknown image id 555"
    if case == "duplicate_annotation_id":
        anns[3]["id"] = 1
        return data, "duplicate_annotation_id", 1, "annotation id 1 (image id 11) is used twice"
    if case == "image_without_file_name":
        del images[3]["file_name"]
        return data, "malformed_image_entry", 1, "image entry without 'id' or 'file_name'"
    if case == "width_not_a_number":
        images[1]["width"] = "32"
        return data, "malformed_image_entry", 1, "image id 11 (1.png): width/height '32'/24 are not"
    if case == "annotation_without_id":
        del anns[2]["id"]
        return data, "malformed_annotation", 1, "annotation without an integer 'id'"
    raise AssertionError(case)


CASES = ["missing_image", "empty_image", "truncated_png", "truncated_jpeg", "not_an_image",
         "size_mismatch", "duplicate_image_id", "unknown_category", "box_partly_outside",
         "box_fully_outside", "zero_area_box", "negative_box", "malformed_box", "empty_polygon",
         "malformed_polygon", "degenerate_polygon", "rle_wrong_size", "orphan_annotation",
         "duplicate_annotation_id", "image_without_file_name", "width_not_a_number",
         "annotation_without_id"]  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_data_error_names_file_and_skip_counts(case: str, coco_root) -> None:
    root, data = coco_root
    data, kind, count, where = _break(case, root, data)
    ann_file = _write(root, data)
    with pytest.raises(DataError) as err:
        load_coco(ann_file, root / "train", BadDataReport("error"), "instance_segmentation", "full")
    assert str(err.value).startswith(str(root)) and "on_bad=skip" in str(err.value)
    assert where in str(err.value)
    report = BadDataReport("skip")
    with pytest.warns(BadDataWarning) as caught:
        index = load_coco(ann_file, root / "train", report, "instance_segmentation", "full")
    assert report.skipped[kind] == count
    warned = [str(w.message) for w in caught if w.category is BadDataWarning]
    problems = {k for k in report.skipped if k != "annotation_of_skipped_image"}
    assert len(warned) == len(problems)  # once per kind, not once per item
    assert all(any(f"({k})" in w for w in warned) for k in problems)
    n_anns = sum(len(r.anns) for r in index.records)
    n_images = len(index.records)
    skipped_images = sum(v for k, v in report.skipped.items() if k in IMAGE_KINDS)
    assert n_images == len(data["images"]) - skipped_images
    assert n_anns == len(data["annotations"]) - (report.total_skipped - skipped_images)
    assert report.to_dict()["skipped"] == dict(sorted(report.skipped.items()))


def test_truncated_jpeg_passes_header_check_and_fails_full(coco_root) -> None:
    root, data = coco_root
    _truncated_jpeg(root / "train" / "j.jpg")
    data["images"].append({"id": 99, "file_name": "j.jpg", "width": W, "height": H})
    ann_file = _write(root, data)
    index = load_coco(ann_file, root / "train", BadDataReport("error"), "detection", "header")
    assert 99 in [r.id for r in index.records]  # header mode misses it ...
    with pytest.raises(DataError, match=r"image id 99: .*j\.jpg: image file is truncated"):
        load_coco(ann_file, root / "train", BadDataReport("error"), "detection", "full")
    with pytest.raises(DataError, match=r"j\.jpg"):  # ... and the loader finds it
        load_image(root / "train" / "j.jpg")


def test_image_above_the_pixel_limit_names_the_key(coco_root) -> None:
    root, data = coco_root
    ann_file = _write(root, data)
    report = BadDataReport("error")
    with pytest.raises(DataError, match=r"0\.png has 768 pixels \(32x24\).*data\.max_image_pixels"):
        load_coco(ann_file, root / "train", report, "detection", "header", max_pixels=700)
    with pytest.raises(DataError, match=r"data\.max_image_pixels"):  # PIL's own error at 2x
        load_image(root / "train" / "0.png", max_pixels=300)
    assert len(load_coco(ann_file, root / "train", report, "detection", "full", 768).records) == 4


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "annotation file not found"),
        ("{not json", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"images": []}), "missing or invalid 'annotations' list"),
        (json.dumps({"images": [], "annotations": [], "categories": []}), "'categories' is empty"),
        (json.dumps({"images": [], "annotations": [], "categories": [{"id": 1}]}),
         "category without 'id' or 'name'"),
        (json.dumps({"images": [], "annotations": [],
                     "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}),
         "category id 1 is listed twice"),
    ],
)  # fmt: skip
def test_malformed_json_names_the_file(tmp_path: Path, content: str | None, message: str) -> None:
    bad = tmp_path / "a.json"
    if content is not None:
        bad.write_text(content)
    for on_bad in ("error", "skip"):  # a broken file cannot be skipped around
        with pytest.raises(DataError) as err:
            load_coco(bad, tmp_path, BadDataReport(on_bad))
        assert str(bad) in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "1", "CMYK"])
def test_image_modes_convert_to_rgb_uint8(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(2)
    if mode == "I;16":
        arr = (rng.integers(0, 65535, (H, W))).astype(np.uint16)
        im = Image.fromarray(arr)
        expected_gray = np.clip(arr / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    else:
        im = Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).convert(mode)
        expected_gray = None
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im.save(path)
    t = load_image(path)
    assert t.dtype == torch.uint8 and t.shape == (3, H, W)
    if expected_gray is not None:
        assert np.abs(t[0].numpy().astype(int) - expected_gray).max() <= 1


def test_exif_orientation_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (W, H), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 4, 4))  # white top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    im.save(tmp_path / "e.jpg", exif=exif, quality=100)
    t = load_image(tmp_path / "e.jpg")
    assert t.shape == (3, W, H)  # width and height swapped
    assert t[:, :4, -4:].float().mean() > 200  # the corner moved to the top-right


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (W, H), 1)
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.info["transparency"] = 0
    im.save(tmp_path / "p.png")
    t = load_image(tmp_path / "p.png")
    assert t.shape == (3, H, W) and t[0].float().mean() == pytest.approx(200, abs=1)


def test_skip_mode_evaluates_against_the_validated_annotations(tmp_path: Path, formats) -> None:
    """What on_bad=skip removed is not ground truth: test evaluates against the kept annotations
    (an unknown category's box would otherwise count as a miss); without skips, the file itself."""
    import shutil
    import warnings

    from visionkit.data.coco.datamodule import CocoDataModule

    root = formats.coco(tmp_path / "coco")
    shutil.copytree(root / "val", root / "test")
    raw = json.loads((root / "annotations" / "instances_val.json").read_text())
    (root / "annotations" / "instances_test.json").write_text(json.dumps(raw))
    clean = CocoDataModule(task="detection", root=str(root), num_workers=0)
    clean.setup("fit")
    assert clean.ground_truth_file("test", tmp_path) == root / "annotations" / "instances_test.json"

    bad = copy.deepcopy(raw)
    bad["annotations"].append({**bad["annotations"][0], "id": 999, "category_id": 3})
    (root / "annotations" / "instances_test.json").write_text(json.dumps(bad))
    dm = CocoDataModule(task="detection", root=str(root), num_workers=0, on_bad="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadDataWarning)
        dm.setup("fit")
    gt = json.loads(dm.ground_truth_file("test", tmp_path / "out").read_text())
    assert sorted(a["id"] for a in gt["annotations"]) == sorted(a["id"] for a in raw["annotations"])
    by_id = {a["id"]: a for a in raw["annotations"]}
    for a in gt["annotations"]:
        want = by_id[a["id"]]
        assert a["bbox"] == pytest.approx(want["bbox"]) and a["category_id"] == want["category_id"]
        assert a["iscrowd"] == want["iscrowd"] and a["segmentation"] == want["segmentation"]
    assert gt["categories"] == raw["categories"]
    assert [im["id"] for im in gt["images"]] == [im["id"] for im in raw["images"]]
