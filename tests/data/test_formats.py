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


def test_masks_unknown_value_and_missing_mask(tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "m", palette=False)
    Image.fromarray(np.full((24, 24), 5, np.uint8)).save(root / "masks" / "train" / "1.png")
    dm = _dm("semantic_segmentation", name="masks", root=str(root))
    with pytest.raises(DataError, match=r"1\.png has class values \[5\]"):
        dm.datasets["train"][1]
    (root / "masks" / "train" / "2.png").unlink()
    with pytest.raises(DataError, match=r"missing mask file .*2\.png"):
        _dm("semantic_segmentation", name="masks", root=str(root))
    with pytest.warns(BadDataWarning):
        dm = _dm("semantic_segmentation", name="masks", root=str(root), on_bad="skip")
    assert dm.report.skipped["missing_mask"] == 1 and len(dm.datasets["train"]) == 3


def test_coco_skip_mode_counts_at_datamodule_level(tmp_path: Path, formats) -> None:
    root = formats.coco(tmp_path / "c")
    ann = root / "annotations" / "instances_train.json"
    data = json.loads(ann.read_text())
    data["annotations"][0]["category_id"] = 999
    ann.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_train\.json: annotation id 1"):
        _dm("detection", name="coco", root=str(root))
    with pytest.warns(BadDataWarning, match="unknown_category=1"):
        dm = _dm("detection", name="coco", root=str(root), on_bad="skip")
    assert dm.report.skipped["unknown_category"] == 1
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
