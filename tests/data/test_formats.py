"""Format-specific behaviour: imagefolder splits, masks class values and palettes, coco skip mode
at the datamodule level, multi-label targets, eval_transform on arbitrary user images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.data.validation import BadDataWarning
from visionkit.errors import ConfigError, DataError
from visionkit.plugins import load_builtins
from visionkit.registries import DATASETS

load_builtins()


def _dm(task: str = "classification", **cfg):
    dm = DATASETS.build({"num_workers": 0, "batch_size": 4, "image_size": 16, **cfg}, task=task)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_imagefolder_splits_and_counts_non_images(tmp_path: Path, formats) -> None:
    root = formats.imagefolder(tmp_path / "f")
    dm = _dm(name="imagefolder", root=str(root))
    assert dm.class_names == ["ant", "bee", "cow"] and dm.label_map.ids == [0, 1, 2]
    assert len(dm.datasets["train"]) == 12 and len(dm.datasets["val"]) == 12
    assert dm.report.notes["non_image_file"] == 1
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64


def test_imagefolder_single_tree_seeded_split(tmp_path: Path, formats) -> None:
    root = formats.imagefolder(tmp_path / "g", splits=False, per_class=10)
    a = _dm(name="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.1, seed=1)
    b = _dm(name="imagefolder", root=str(root), val_fraction=0.2, test_fraction=0.1, seed=1)
    sizes = {s: len(a.datasets[s]) for s in ("train", "val", "test")}
    assert sizes == {"train": 21, "val": 6, "test": 3}
    assert a.datasets["val"].items == b.datasets["val"].items
    all_items = [it for s in ("train", "val", "test") for it in a.datasets[s].items]
    assert len(set(all_items)) == 30  # a partition: nothing lost, nothing twice


def test_masks_reads_values_and_palettes(tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "m", palette=True)
    dm = _dm("semantic_segmentation", name="masks", root=str(root), train_transforms=[],
             eval_transforms=[])  # fmt: skip
    assert dm.class_names == ["background", "road", "car"] and dm.label_map.ids == [0, 3, 8]
    _, mask = dm.datasets["train"][0]
    raw = np.asarray(Image.open(root / "masks" / "train" / "0.png"))
    lut = {0: 0, 3: 1, 8: 2, 255: 255}
    assert np.array_equal(mask.numpy(), np.vectorize(lut.get)(raw))


def _truncated_jpeg(path: Path, size: int = 24) -> None:
    """A JPEG cut inside its pixel data: its header parses, decoding fails."""
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.7)])


def _break_masks(case: str, root: Path) -> tuple[str, str]:
    """Apply one bad-input case to a ``formats.masks`` tree; returns (kind, text the error names)."""
    images, masks = root / "images" / "train", root / "masks" / "train"
    if case == "out_of_range_values":
        Image.fromarray(np.full((24, 24), 5, np.uint8)).save(masks / "1.png")
        return (
            "bad_mask_values",
            f"mask {masks / '1.png'} has class values [5] not in the class file",
        )
    if case == "mask_wrong_size":
        Image.fromarray(np.zeros((24, 20), np.uint8)).save(masks / "2.png")
        return "mask_size_mismatch", f"mask {masks / '2.png'} is 20x24 but image {images / '2.jpg'} is 24x24"  # fmt: skip
    if case == "missing_mask":
        (masks / "2.png").unlink()
        return "missing_mask", f"missing mask file {masks / '2.png'} for image {images / '2.jpg'}"
    if case == "mask_without_image":
        (images / "3.jpg").unlink()
        return "mask_without_image", f"mask {masks / '3.png'} has no image in {images}"
    if case == "rgb_mask":
        Image.new("RGB", (24, 24)).save(masks / "0.png")
        return "unreadable_mask", f"mask {masks / '0.png'} has mode RGB"
    if case == "truncated_mask":
        raw = (masks / "1.png").read_bytes()
        (masks / "1.png").write_bytes(raw[: len(raw) // 2])
        return "unreadable_mask", str(masks / "1.png")
    if case == "truncated_image":
        _truncated_jpeg(images / "1.jpg")
        return "unreadable_image", f"{images / '1.jpg'}: image file is truncated"
    if case == "empty_image":
        (images / "2.jpg").write_bytes(b"")
        return "empty_image", f"empty image file: {images / '2.jpg'}"
    if case == "not_an_image":
        (images / "0.jpg").write_text("not a picture")
        return "unreadable_image", f"unreadable image {images / '0.jpg'}"
    raise AssertionError(case)


MASK_CASES = ["out_of_range_values", "mask_wrong_size", "missing_mask", "mask_without_image",
              "rgb_mask", "truncated_mask", "truncated_image", "empty_image", "not_an_image"]  # fmt: skip


@pytest.mark.parametrize("case", MASK_CASES)
def test_masks_bad_input_found_at_setup(case: str, tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "m", palette=False)
    kind, where = _break_masks(case, root)
    cfg = {"name": "masks", "root": str(root)}
    with pytest.raises(DataError) as err:
        _dm("semantic_segmentation", **cfg)
    assert where in str(err.value) and "on_bad=skip" in str(err.value)
    with pytest.warns(BadDataWarning) as caught:
        dm = _dm("semantic_segmentation", on_bad="skip", **cfg)
    assert [w.category for w in caught].count(BadDataWarning) == 1
    assert dm.extra_results()["data"]["skipped"] == {kind: 1}
    assert len(dm.datasets["train"]) == 3
    assert len(dm.datasets["val"]) == 4
    for i in range(len(dm.datasets["train"])):  # what is left loads
        image, mask = dm.datasets["train"][i]
        assert image.shape[1:] == mask.shape


def test_masks_header_mode_defers_values_to_the_loader(tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "m", palette=False)
    _break_masks("out_of_range_values", root)
    dm = _dm("semantic_segmentation", name="masks", root=str(root), verify_images="header")
    with pytest.raises(DataError, match=r"1\.png has class values \[5\].*verify_images=full"):
        dm.datasets["train"][1]


def _break_folder(case: str, root: Path) -> tuple[str, str]:
    """Apply one bad-input case to a ``formats.imagefolder`` tree; returns (kind, error text)."""
    train = root / "train"
    if case == "empty_class_folder":
        (train / "dog").mkdir()
        (train / "dog" / "readme.txt").write_text("no pictures yet")
        return "empty_class_folder", f"class folder {train / 'dog'} has no images"
    if case == "truncated_image":
        _truncated_jpeg(train / "ant" / "t.jpg")
        return "unreadable_image", f"{train / 'ant' / 't.jpg'}: image file is truncated"
    if case == "empty_image":
        (train / "bee" / "e.png").write_bytes(b"")
        return "empty_image", f"empty image file: {train / 'bee' / 'e.png'}"
    if case == "not_an_image":
        (train / "cow" / "x.png").write_text("not a picture")
        return "unreadable_image", f"unreadable image {train / 'cow' / 'x.png'}"
    if case == "dangling_link":
        (train / "ant" / "l.png").symlink_to(root / "nowhere.png")
        return "missing_image", f"missing image file: {train / 'ant' / 'l.png'}"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["empty_class_folder", "truncated_image", "empty_image", "not_an_image", "dangling_link"],
)
def test_imagefolder_bad_input_found_at_setup(case: str, tmp_path: Path, formats) -> None:
    root = formats.imagefolder(tmp_path / "f")
    kind, where = _break_folder(case, root)
    with pytest.raises(DataError) as err:
        _dm(name="imagefolder", root=str(root))
    assert where in str(err.value) and "on_bad=skip" in str(err.value)
    with pytest.warns(BadDataWarning) as caught:
        dm = _dm(name="imagefolder", root=str(root), on_bad="skip")
    assert [w.category for w in caught].count(BadDataWarning) == 1
    assert dm.extra_results()["data"]["skipped"] == {kind: 1}
    assert dm.class_names == ["ant", "bee", "cow"]  # an empty folder does not become a class
    assert len(dm.datasets["train"]) == 12 and len(dm.datasets["val"]) == 12


def test_imagefolder_empty_train_class_skips_its_val_images(tmp_path: Path, formats) -> None:
    root = formats.imagefolder(tmp_path / "f")
    (root / "train" / "dog").mkdir()
    (root / "val" / "dog").mkdir()
    Image.new("RGB", (20, 20)).save(root / "val" / "dog" / "0.png")
    dm = _dm(name="imagefolder", root=str(root), on_bad="skip")
    assert dm.class_names == ["ant", "bee", "cow"] and len(dm.datasets["val"]) == 12
    assert dm.report.skipped == {"empty_class_folder": 1, "image_of_skipped_class": 1}


@pytest.mark.parametrize("fmt", ["coco", "masks", "imagefolder"])
def test_root_that_is_not_a_folder(fmt: str, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    task = "semantic_segmentation" if fmt == "masks" else "classification"
    with pytest.raises(
        ConfigError, match=r"data\.root .*file/x is not a folder \(.*file is a file\)"
    ):
        _dm(task, name=fmt, root=str(tmp_path / "file" / "x"))


def test_pixel_limit_applies_at_setup_and_in_workers(tmp_path: Path, formats) -> None:
    root = formats.imagefolder(tmp_path / "f")  # 20x20 = 400 pixels each
    with pytest.raises(
        DataError, match=r"has 400 pixels \(20x20\), more than .* limit of 399 .*max_image_pixels"
    ):
        _dm(name="imagefolder", root=str(root), max_image_pixels=399)
    dm = _dm(name="imagefolder", root=str(root), max_image_pixels=400)
    ds = dm.datasets["train"]
    assert ds.max_pixels == 400
    Image.MAX_IMAGE_PIXELS = 10  # a fresh worker process: the dataset brings its own limit
    assert ds[0][0].shape == (3, 16, 16)
    ds.max_pixels = 300
    with pytest.raises(DataError, match=r"data\.max_image_pixels"):
        ds[0]
    with pytest.raises(ConfigError, match="max_image_pixels"):
        _dm(name="imagefolder", root=str(root), max_image_pixels="many")


def test_coco_skip_mode_counts_at_datamodule_level(tmp_path: Path, formats) -> None:
    root = formats.coco(tmp_path / "c")
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 999
    data["annotations"][1]["id"] = data["annotations"][2]["id"]
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_train\.json: annotation id 1"):
        _dm("detection", name="coco", root=str(root))
    with pytest.warns(BadDataWarning, match="unknown_category"):
        dm = _dm("detection", name="coco", root=str(root), on_bad="skip")
    assert dm.report.skipped == {"unknown_category": 1, "duplicate_annotation_id": 1}
    results = dm.extra_results()["data"]
    assert results["format"] == "coco" and results["skipped_total"] == 2
    assert "annotation id 1" in results["examples"]["unknown_category"]
    assert dm.annotation_file("val") == root / "annotations" / "instances_val.json"
    assert dm.image_ids("val") == [100, 101, 102, 103]


def test_multi_label_targets(shapes_root: Path, make_shapes) -> None:
    dm = make_shapes(shapes_root, "classification", max_objects=3, multi_label=True)
    images, targets = next(iter(dm.train_dataloader()))
    assert targets.shape == (images.shape[0], 6) and targets.dtype == torch.float32
    assert set(targets.unique().tolist()) <= {0.0, 1.0} and (targets.sum(1) >= 1).all()
    with pytest.raises(ConfigError, match="multi_label"):
        make_shapes(shapes_root, "classification", multi_label=True, mixup_alpha=0.2)


@pytest.mark.parametrize("kind", ["gray_pil", "rgba_pil", "uint16_array", "float_tensor", "path"])
def test_eval_transform_accepts_user_images(kind: str, shapes_root: Path, make_shapes, tmp_path):
    dm = make_shapes(shapes_root, "classification")
    rng = np.random.default_rng(0)
    image = {
        "gray_pil": lambda: Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)),
        "rgba_pil": lambda: Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8)),
        "uint16_array": lambda: rng.integers(0, 65535, (50, 70)).astype(np.uint16),
        "float_tensor": lambda: torch.rand(3, 50, 70),
        "path": lambda: (Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
                         .save(tmp_path / "u.jpg") or tmp_path / "u.jpg"),
    }[kind]()  # fmt: skip
    out = dm.eval_transform(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
