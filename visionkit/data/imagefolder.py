"""``imagefolder``: class-per-folder classification (classification only).

Either ``root/{train,val[,test]}/<class>/<image>`` or one ``root/<class>/<image>`` tree cut into
splits with a seeded shuffle (``val_fraction``, ``test_fraction``). Class names are the sorted
folder names; their ids are 0..K-1. Non-image files are counted and reported, never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit.data.datamodule import SPLITS, VisionDataModule
from visionkit.data.datasets.folders import LabelledFiles, list_images, seeded_split
from visionkit.data.labels import LabelMap
from visionkit.data.validation import check_image_file
from visionkit.errors import ConfigError


class ImageFolderDataModule(VisionDataModule):
    """Class-per-folder images; see the module docstring."""

    FORMAT = "imagefolder"
    SUPPORTED_TASKS = ("classification",)

    def __init__(self, val_fraction: float = 0.2, test_fraction: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        if not (
            0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ConfigError("data.val_fraction + data.test_fraction must be in [0, 1)")
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)

    def _classes(self, folder: Path) -> list[str]:
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))

    def _items(self, folder: Path, classes: list[str]) -> list[tuple[Path, int]]:
        items = []
        for index, name in enumerate(classes):
            class_dir = folder / name
            if not class_dir.is_dir():
                continue
            images, others = list_images(class_dir)
            for other in others:
                self.report.note("non_image_file", f"not an image: {other}")
            for path in images:
                reason = check_image_file(path, self.verify_images)
                if reason is not None:
                    self.report.problem("unreadable_image", reason)
                    continue
                items.append((path, index))
        return items

    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        if not self.root.is_dir():
            raise ConfigError(f"data format 'imagefolder': root folder not found: {self.root}")
        if (self.root / "train").is_dir():
            classes = self._classes(self.root / "train")
            if not classes:
                raise ConfigError(f"no class folders under {self.root / 'train'}")
            datasets = {}
            for split in SPLITS:
                if (self.root / split).is_dir():
                    extra = set(self._classes(self.root / split)) - set(classes)
                    if extra:
                        raise ConfigError(
                            f"{self.root / split} has class folders {sorted(extra)} missing from "
                            f"{self.root / 'train'}"
                        )
                    datasets[split] = LabelledFiles(self._items(self.root / split, classes))
        else:
            classes = self._classes(self.root)
            if not classes:
                raise ConfigError(f"no class folders (or train/ folder) under {self.root}")
            items = self._items(self.root, classes)
            parts = seeded_split(len(items), [self.val_fraction, self.test_fraction], self.seed)
            datasets = {
                split: LabelledFiles([items[i] for i in part])
                for split, part in zip(SPLITS, parts, strict=True)
                if len(part) or split == "train"
            }
        if "train" not in datasets or len(datasets["train"]) == 0:
            raise ConfigError(f"data format 'imagefolder': no training images under {self.root}")
        return LabelMap(classes), datasets
