"""ShapesDataModule: built through DATASETS for every task, batches follow the task contracts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from visionkit.errors import ConfigError


def test_classification_batches(shapes_root: Path, make_shapes) -> None:
    dm = make_shapes(shapes_root, "classification", batch_size=8)
    assert dm.label_map.ids == [1, 3, 5, 7, 9, 11]
    assert dm.num_classes == 6 and dm.class_names[:3] == ["circle", "square", "triangle"]
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32
    assert targets.dtype == torch.int64 and targets.shape == (8,)
    assert int(targets.min()) >= 0 and int(targets.max()) < 6
    # normalised: undoing mean/std lands in 0..1
    mean = torch.tensor(dm.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.std).view(1, 3, 1, 1)
    raw = images * std + mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    val_images, _ = next(iter(dm.val_dataloader()))
    assert val_images.shape[1:] == (3, 32, 32)
    assert dm.has_split("test") and dm.annotation_file("val").is_file()
    assert len(dm.image_ids("val")) == 8


def test_labels_match_annotation_file(shapes_root: Path, make_shapes) -> None:
    import json

    dm = make_shapes(shapes_root, "classification", train_transforms=[], eval_transforms=[])
    data = json.loads(dm.annotation_file("val").read_text())
    by_image = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    ds = dm.datasets["val"]
    for i, image_id in enumerate(dm.image_ids("val")):
        _, label = ds[i]
        assert dm.label_map.to_ids(label) == by_image[image_id]


def test_unknown_task_and_bad_key_raise(shapes_root: Path, make_shapes) -> None:
    with pytest.raises(ConfigError, match="task"):
        make_shapes(shapes_root, "captioning")
    with pytest.raises(ConfigError, match="on_bad"):
        make_shapes(shapes_root, "classification", on_bad="ignore")


@pytest.mark.parametrize(
    ("task", "objects", "batch"),
    [("classification", 1, 32), ("semantic_segmentation", 3, 32), ("detection", 3, 16),
     ("instance_segmentation", 3, 16)],
)  # fmt: skip
def test_per_task_defaults_live_in_the_datamodule(task: str, objects: int, batch: int) -> None:
    """max_objects / batch_size null: the values the README's task figures were measured with."""
    from visionkit.registries import DATASETS

    dm = DATASETS.build({"name": "shapes", "max_objects": None, "batch_size": None}, task=task)
    assert (dm.spec.max_objects, dm.batch_size, dm.eval_batch_size) == (objects, batch, batch)
    assert DATASETS.build({"name": "shapes", "max_objects": 2}, task=task).spec.max_objects == 2
