"""``shapes``: the embedded, generated dataset (see visionkit.data.shapes.generator), read through
the COCO format, so it serves all four tasks from the same files.

Config keys: image_size, num_train, num_val, num_test, min_objects, max_objects, min_size,
max_size, max_rotation, seed (generation; each combination is cached in its own directory under
``root``), plus every VisionDataModule key. The task-specific defaults live here, not in the task
configs (which may not push keys onto other formats): ``max_objects`` null means 1 for
classification (one shape per image; with more shapes the label is the largest shape's category)
and 3 for the other tasks; ``batch_size`` null means 16 for detection and instance segmentation,
32 otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit.data.coco.datamodule import CocoDataModule
from visionkit.data.datamodule import DETECTION_TASKS
from visionkit.data.shapes.generator import ShapesSpec, ensure_shapes


class ShapesDataModule(CocoDataModule):
    """Generated shapes (circle, square, triangle, star, cross, semicircle; ids 1, 3, ..., 11)."""

    FORMAT = "shapes"

    def __init__(
        self,
        task: str = "classification",
        image_size: int = 64,
        num_train: int = 2000,
        num_val: int = 400,
        num_test: int = 400,
        min_objects: int = 1,
        max_objects: int | None = None,
        min_size: float | None = None,
        max_size: float | None = None,
        max_rotation: float = 30.0,
        seed: int = 0,
        batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("verify_images", "none")  # we wrote these files ourselves
        if max_objects is None:
            max_objects = 1 if task == "classification" else 3
        if batch_size is None:
            batch_size = 16 if task in DETECTION_TASKS else 32
        super().__init__(task=task, image_size=image_size, seed=seed, batch_size=batch_size, **kwargs)  # fmt: skip
        many = max_objects > 1
        self.spec = ShapesSpec(
            image_size=int(image_size),
            num_train=int(num_train),
            num_val=int(num_val),
            num_test=int(num_test),
            min_objects=int(min_objects),
            max_objects=int(max_objects),
            min_size=float(min_size if min_size is not None else (0.12 if many else 0.3)),
            max_size=float(max_size if max_size is not None else (0.3 if many else 0.45)),
            max_rotation=float(max_rotation),
            seed=int(seed),
        )
        self.required_splits = tuple(s for s in ("train", "val") if self.spec.count(s) > 0)

    def prepare_data(self) -> None:
        ensure_shapes(self.root, self.spec)

    def data_root(self) -> Path:
        return self.root / self.spec.key

    def build_splits(self):  # type: ignore[override]
        ensure_shapes(self.root, self.spec)  # setup without prepare_data (e.g. other ranks)
        return super().build_splits()
