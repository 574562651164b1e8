"""``yolo`` format: ``images/{split}/`` and ``labels/{split}/`` (same stems), class names in
``data.yaml`` or ``classes.txt`` under ``root`` (``names_file`` picks another).

Box lines serve detection, polygon lines detection (their bounding box) and instance
segmentation. Read into the COCO structure and validated as COCO data
(:mod:`visionkit.data.yolo.reader`): label encoding, bad-data rules (each problem names the
label file and line), augmentation and evaluation are COCO's.
"""

from __future__ import annotations

from typing import Any

from visionkit.data.coco.datamodule import ConvertedDataModule
from visionkit.data.coco.reader import CocoIndex, index_coco
from visionkit.data.yolo.reader import read_names, read_yolo
from visionkit.errors import ConfigError


class YoloDataModule(ConvertedDataModule):
    """YOLO txt labels; see the module docstring."""

    FORMAT = "yolo"

    def __init__(
        self,
        images: str = "images/{split}",
        labels: str = "labels/{split}",
        names_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(images=images, annotations=labels, **kwargs)
        self.names_file = names_file

    def load_index(self, split: str) -> CocoIndex | None:
        image_dir = self.image_dir(split)
        if not image_dir.is_dir():
            if split in self.required_splits:
                raise ConfigError(f"data format 'yolo': image folder for split '{split}' not found: {image_dir} (config keys data.root / data.images)")  # fmt: skip
            return None
        label_dir = self.data_root() / self.annotations_template.format(split=split)
        names = read_names(self.data_root(), self.names_file)
        data, places = read_yolo(image_dir, label_dir, names, self.report, self.task, self.max_image_pixels)  # fmt: skip
        return index_coco(data, label_dir, image_dir, self.report, self.task, self.verify_images, self.max_image_pixels, places)  # fmt: skip
