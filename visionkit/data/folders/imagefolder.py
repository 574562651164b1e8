"""``imagefolder``: class-per-folder classification (classification only).

Either ``root/{train,val[,test]}/<class>/<image>`` or one ``root/<class>/<image>`` tree cut into
splits with a seeded shuffle (``val_fraction``, ``test_fraction``). Class names are the sorted
folder names; their ids are 0..K-1. Non-image files are counted and reported, never read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit.data.datamodule import SPLITS, VisionDataModule
from visionkit.data.folders.reader import LabelledFiles, list_images, seeded_split
from visionkit.data.labels import LabelMap
from visionkit.data.validation import check_image_files
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

    def _class_files(self, folder: Path, classes: list[str]) -> dict[str, list[Path]]:
        """Image files per class folder (non-image files are noted, never read)."""
        files = {}
        for name in classes:
            images, others = list_images(folder / name) if (folder / name).is_dir() else ([], [])
            for other in others:
                self.report.note("non_image_file", f"not an image: {other}")
            files[name] = images
        return files

    def _drop_empty(self, folder: Path, files: dict[str, list[Path]]) -> list[str]:
        """The classes with images; an empty class folder would become a class without examples,
        so it is a problem (skip mode leaves the class out, counted)."""
        for name, images in files.items():
            if not images:
                self.report.problem(
                    "empty_class_folder",
                    f"class folder {folder / name} has no images; remove it or add images",
                )
        return [name for name, images in files.items() if images]

    def _items(self, files: dict[str, list[Path]], classes: list[str]) -> list[tuple[Path, int]]:
        """``(path, class index)`` of every readable image (checked in parallel); images of a
        folder that is not a class (skipped as empty in train) are counted."""
        index = {name: i for i, name in enumerate(classes)}
        for name, images in files.items():
            if name not in index and images:
                self.report.skipped["image_of_skipped_class"] += len(images)
        listed = [(path, index[name]) for name, images in files.items() if name in index
                  for path in images]  # fmt: skip
        checks = check_image_files(
            [p for p, _ in listed], self.verify_images, self.max_image_pixels
        )
        items = []
        for item, check in zip(listed, checks, strict=True):
            if check.reason is not None:
                self.report.problem(check.kind or "unreadable_image", check.reason)
                continue
            items.append(item)
        return items

    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        self.require_root()
        if (self.root / "train").is_dir():
            train = self.root / "train"
            found = self._classes(train)
            if not found:
                raise ConfigError(f"no class folders under {train}")
            train_files = self._class_files(train, found)
            classes = self._drop_empty(train, train_files)
            datasets = {}
            for split in SPLITS:
                folder = self.root / split
                if not folder.is_dir():
                    continue
                split_classes = self._classes(folder)
                extra = set(split_classes) - set(found)
                if extra:
                    raise ConfigError(
                        f"{folder} has class folders {sorted(extra)} missing from {train}"
                    )
                files = (
                    train_files if split == "train" else self._class_files(folder, split_classes)
                )
                datasets[split] = LabelledFiles(self._items(files, classes))
        else:
            found = self._classes(self.root)
            if not found:
                raise ConfigError(f"no class folders (or train/ folder) under {self.root}")
            files = self._class_files(self.root, found)
            classes = self._drop_empty(self.root, files)
            items = self._items(files, classes)
            parts = seeded_split(len(items), [self.val_fraction, self.test_fraction], self.seed)
            datasets = {
                split: LabelledFiles([items[i] for i in part])
                for split, part in zip(SPLITS, parts, strict=True)
                if len(part) or split == "train"
            }
        if not classes or "train" not in datasets or len(datasets["train"]) == 0:
            raise ConfigError(f"data format 'imagefolder': no training images under {self.root}")
        return LabelMap(classes), datasets
