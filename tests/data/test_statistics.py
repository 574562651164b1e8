"""Dataset statistics in-process against NumPy / pycocotools on small data written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.data.statistics import DatasetStatistics, normalisation_overrides, summarize_sample

# (width, height, [(category id, x, y, w, h, iscrowd)]): boxes small (< 32²), medium, large
COCO_IMAGES = [
    (120, 100, [(5, 2, 2, 10, 8, 0), (17, 20, 10, 40, 30, 0), (5, 0, 0, 110, 95, 0)]),
    (64, 80, [(17, 4, 4, 31, 33, 0), (5, 30, 40, 20, 20, 1)]),  # 1023 < 32²: small; one crowd
    (50, 40, []),
]


def write_coco(root: Path) -> Path:
    rng = np.random.default_rng(3)
    images, anns = [], []
    (root / "train").mkdir(parents=True)
    for i, (w, h, objects) in enumerate(COCO_IMAGES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / "train" / f"{i}.png")  # fmt: skip
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": w, "height": h})
        for cat, x, y, bw, bh, crowd in objects:
            poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": crowd, "segmentation": [poly]})  # fmt: skip
    (root / "annotations").mkdir()
    cats = [{"id": 5, "name": "a"}, {"id": 17, "name": "b"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def statistics_of(dm) -> dict:
    stats = DatasetStatistics(dm.task, dm.class_names)
    dataset = dm.datasets["train"]
    dataset.transform = None
    for i in range(len(dataset)):
        stats.add(summarize_sample(dataset[i], dm.task))
    return stats.result()


def build(name: str, root: Path, task: str):
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    spec = {"name": name, "root": str(root), "num_workers": 0}
    if name == "coco":
        spec["required_splits"] = ["train"]
    dm = DATASETS.build(spec, task=task)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def numpy_mean_std(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.concatenate([np.asarray(Image.open(f).convert("RGB")).reshape(-1, 3) / 255.0 for f in files])  # fmt: skip
    return pixels.mean(axis=0), pixels.std(axis=0)


@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_coco_boxes_objects_classes_and_pixels(tmp_path: Path, task: str) -> None:
    from pycocotools import mask as mask_utils

    root = write_coco(tmp_path / "coco")
    result = statistics_of(build("coco", root, task))
    mean, std = numpy_mean_std(sorted((root / "train").glob("*.png")))
    assert result["mean"] == pytest.approx(mean, abs=1e-12)
    assert result["std"] == pytest.approx(std, abs=1e-12)
    assert result["images"] == 3 and result["pixels"] == 120 * 100 + 64 * 80 + 50 * 40
    assert result["image_sizes"]["height"] == {"min": 40, "max": 100, "mean": pytest.approx(220 / 3), "median": 80.0}  # fmt: skip
    assert result["box_sizes"] == {"small": 2, "medium": 1, "large": 1}  # 80, 1023 | 1200 | 10450
    assert result["crowd_regions"] == 1
    assert result["class_objects"] == {"a": 2, "b": 2}
    assert result["class_images"] == {"a": 1, "b": 2}
    assert result["objects_per_image"]["histogram"] == {"0": 1, "1": 1, "3": 1}
    assert result["objects_per_image"]["mean"] == pytest.approx(4 / 3)
    if task == "instance_segmentation":  # union of the non-crowd masks, rasterised by pycocotools
        coverage = []
        for w, h, objects in COCO_IMAGES:
            union = np.zeros((h, w), bool)
            for _, x, y, bw, bh, crowd in objects:
                if not crowd:
                    rle = mask_utils.frPyObjects([[x, y, x + bw, y, x + bw, y + bh, x, y + bh]], h, w)  # fmt: skip
                    union |= mask_utils.decode(rle)[..., 0].astype(bool)
            coverage.append(union.mean())
        assert result["mask_coverage"]["mean"] == pytest.approx(np.mean(coverage))
        assert result["mask_coverage"]["min"] == 0.0
    else:
        assert "mask_coverage" not in result
    assert normalisation_overrides(result, task).startswith("++model.head.image_mean=[")


def test_masks_pixel_shares_and_images_per_class(tmp_path: Path, formats) -> None:
    root = formats.masks(tmp_path / "masks", n=3, size=24)
    dm = build("masks", root, "semantic_segmentation")
    result = statistics_of(dm)
    mean, std = numpy_mean_std(sorted((root / "images" / "train").glob("*.jpg")))
    assert result["mean"] == pytest.approx(mean, abs=1e-12)
    assert result["std"] == pytest.approx(std, abs=1e-12)
    # per mask: row 0 ignore (24 px); rows 1..11 road (11*24); bottom-left car (12*12); rest background
    labelled = 24 * 24 - 24
    expected = {"background": 144 / labelled, "road": 264 / labelled, "car": 144 / labelled}
    assert result["class_pixel_fraction"] == pytest.approx(expected)
    assert result["ignore_pixel_fraction"] == pytest.approx(24 / 576)
    assert result["class_images"] == {"background": 3, "road": 3, "car": 3}


def test_merged_statistics_equal_one_pass_over_all_pixels() -> None:
    """Chan's merge over many images of different sizes equals NumPy on the concatenation."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, h, w), dtype=np.uint8) for h, w in [(1, 1), (7, 300), (64, 48), (2, 2000)]]  # fmt: skip
    stats = DatasetStatistics("classification", ["x"])
    for image in images:
        stats.add(summarize_sample((image, 0), "classification"))
    result = stats.result()
    pixels = np.concatenate([im.reshape(3, -1) for im in images], axis=1) / 255.0
    assert result["mean"] == pytest.approx(pixels.mean(axis=1), abs=1e-12)
    assert result["std"] == pytest.approx(pixels.std(axis=1), abs=1e-12)
    assert result["class_images"] == {"x": 4}
    mean, std = (",".join(f"{v:.4f}" for v in x) for x in (pixels.mean(1), pixels.std(1)))
    assert (
        normalisation_overrides(result, "classification") == f"data.mean=[{mean}] data.std=[{std}]"
    )
