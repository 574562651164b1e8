"""Data test fixtures: tiny shapes datamodules (in the session data dir of tests/conftest.py) and
writers of tiny on-disk datasets in each format (``formats`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

TINY = {"image_size": 32, "num_train": 20, "num_val": 8, "num_test": 8, "num_workers": 0}
TINY_MULTI = {**TINY, "image_size": 48, "max_objects": 3, "batch_size": 4}


@pytest.fixture(autouse=True)
def _restore_pixel_limit():
    """data.max_image_pixels sets PIL's process-wide limit: undo it after each test."""
    before = Image.MAX_IMAGE_PIXELS
    yield
    Image.MAX_IMAGE_PIXELS = before


@pytest.fixture(scope="session")
def shapes_root(data_dir: Path) -> Path:
    return data_dir / "shapes"


@pytest.fixture(scope="session")
def make_shapes():
    """``make_shapes(root, task, **overrides)``: a prepared and set-up tiny shapes datamodule."""
    return build_shapes


def build_shapes(root: Path, task: str, **overrides):
    """A prepared and set-up tiny shapes datamodule."""
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    base = TINY if task == "classification" else TINY_MULTI
    dm = DATASETS.build({"name": "shapes", "root": str(root), **base, **overrides}, task=task)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.fixture(scope="session")
def formats() -> SimpleNamespace:
    """``formats.imagefolder(root)``, ``formats.masks(root)``, ``formats.coco(root)``."""
    return SimpleNamespace(imagefolder=write_imagefolder, masks=write_masks, coco=write_coco)


def write_imagefolder(root: Path, splits: bool = True, per_class: int = 4, size: int = 20) -> Path:
    """``root/{train,val}/<class>/*.png`` (or ``root/<class>/*.png`` without splits)."""
    rng = np.random.default_rng(0)
    for split in ("train", "val") if splits else ("",):
        for c, name in enumerate(("ant", "bee", "cow")):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 60, (size, size, 3), dtype=np.uint8) + c * 80
                mode = ("RGB", "L", "RGBA")[i % 3]
                Image.fromarray(arr).convert(mode).save(folder / f"{i}.png")
    (root / ("train" if splits else "") / "ant" / "notes.txt").write_text("not an image")
    return root


def write_masks(root: Path, n: int = 4, size: int = 24, palette: bool = True) -> Path:
    """``root/images/{split}/*.jpg``, ``root/masks/{split}/*.png`` (values 0, 3, 8, 255)."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("0: background\n3: road\n8: car\n")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / "images" / split / f"{i}.jpg"
            )
            mask = np.zeros((size, size), np.uint8)
            mask[: size // 2] = 3
            mask[size // 2 :, : size // 2] = 8
            mask[0, :] = 255
            im = Image.fromarray(mask)
            if palette:
                im = im.convert("P")
                im.putpalette(list(rng.integers(0, 255, 768)))
            im.save(root / "masks" / split / f"{i}.png")
    return root


def write_coco(root: Path, n: int = 4, size: int = 32) -> Path:
    """A tiny COCO dataset with non-contiguous ids, polygons and one crowd RLE per split."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(2)
    cats = [{"id": 5, "name": "a"}, {"id": 17, "name": "b"}]
    for split in ("train", "val"):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
                root / split / f"{i}.png"
            )
            images.append({"id": 100 + i, "file_name": f"{i}.png", "width": size, "height": size})
            x, y = int(rng.integers(0, size // 2)), int(rng.integers(0, size // 2))
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 5 + 12 * (i % 2),
                         "bbox": [x, y, 10, 8], "area": 80.0, "iscrowd": 0,
                         "segmentation": [[x, y, x + 10, y, x + 10, y + 8, x, y + 8]]})  # fmt: skip
            if i == 0:
                m = np.zeros((size, size), np.uint8)
                m[-6:, -6:] = 1
                rle = mask_utils.encode(np.asfortranarray(m))
                rle["counts"] = rle["counts"].decode("ascii")
                anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": 17,
                             "bbox": [size - 6, size - 6, 6, 6], "area": 36.0, "iscrowd": 1,
                             "segmentation": rle})  # fmt: skip
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats})
        )
    return root
