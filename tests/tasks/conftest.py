"""Task test helpers: a crafted COCO dataset with non-contiguous ids, crowd regions and empty images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from visionkit.plugins import load_builtins

load_builtins()
torch.set_num_threads(1)

CATEGORIES = [{"id": 3, "name": "ant"}, {"id": 7, "name": "bee"}, {"id": 12, "name": "cow"}]
# image id -> (width, height, [(category id, x, y, w, h, iscrowd), ...])
IMAGES = {
    101: (48, 40, [(3, 4, 4, 14, 12, 0), (7, 26, 10, 16, 20, 0)]),
    205: (64, 64, [(12, 8, 8, 20, 20, 0), (3, 36, 30, 22, 26, 1), (7, 40, 4, 18, 12, 0)]),
    333: (40, 56, [(12, 6, 20, 28, 30, 0)]),
    404: (50, 50, []),  # an image without objects
    512: (64, 48, [(7, 2, 2, 10, 10, 0), (7, 30, 20, 24, 20, 0), (3, 12, 30, 12, 14, 0)]),
    999: (36, 36, [(3, 0, 0, 36, 36, 1)]),  # only a crowd region
}


def code_of(index: int) -> int:
    """Images are uniform in red = code: it survives any resize, so a fake model can read it."""
    return 20 * index + 10


def write_crafted_coco(root: Path) -> Path:
    """``root/{train,val,test}/*.png`` + ``root/annotations/instances_{split}.json`` (same content)."""
    anns, images = [], []
    for index, (image_id, (w, h, objects)) in enumerate(IMAGES.items()):
        images.append({"id": image_id, "file_name": f"{image_id}.png", "width": w, "height": h})
        for cat, x, y, bw, bh, crowd in objects:
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append(
                {
                    "id": 1000 + len(anns),
                    "image_id": image_id,
                    "category_id": cat,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": crowd,
                    "segmentation": [poly],
                }
            )
        for split in ("train", "val", "test"):
            folder = root / split
            folder.mkdir(parents=True, exist_ok=True)
            arr = np.zeros((h, w, 3), np.uint8)
            arr[..., 0] = code_of(index)
            Image.fromarray(arr).save(folder / f"{image_id}.png")
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        data = {"images": images, "annotations": anns, "categories": CATEGORIES}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def crafted_coco(tmp_path: Path) -> Path:
    return write_crafted_coco(tmp_path / "crafted")


TINY_DET_MODEL = {
    "backbone": {"name": "simple_cnn", "channels": [8, 8, 8, 8]},
    "neck": {"name": "fpn", "out_channels": 8, "in_indices": [1, 2, 3]},
    "head": {"name": "fasterrcnn", "min_size": 64, "max_size": 64, "representation_size": 16},
}
