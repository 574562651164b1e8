"""``voc`` format: Pascal VOC XML per image (``Annotations/``), images in ``JPEGImages/``, split
lists ``ImageSets/Main/{split}.txt`` (one image stem per line).

Read into the COCO structure and validated as COCO data (:mod:`visionkit.data.voc.reader`), so
label encoding, bad-data rules, augmentation and evaluation are COCO's; ``difficult`` objects are
COCO ``iscrowd`` regions (ignored in evaluation, not trained on). ``classes`` fixes the class list
and order (null: the sorted names found in the split lists' files). Instance segmentation reads
each object's mask from ``instance_masks`` (VOC's ``SegmentationObject/<stem>.png``; use the
split lists of ``ImageSets/Segmentation``, the images that have masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from visionkit.data.coco.datamodule import ConvertedDataModule
from visionkit.data.coco.reader import CocoIndex, index_coco
from visionkit.data.datamodule import SPLITS
from visionkit.data.voc.reader import parse_xml, read_voc
from visionkit.errors import ConfigError


class VocDataModule(ConvertedDataModule):
    """Pascal VOC folders; see the module docstring."""

    FORMAT = "voc"

    def __init__(
        self,
        images: str = "JPEGImages",
        annotations: str = "Annotations",
        split_list: str = "ImageSets/Main/{split}.txt",
        classes: Sequence[str] | None = None,
        instance_masks: str = "SegmentationObject",
        **kwargs: Any,
    ) -> None:
        super().__init__(images=images, annotations=annotations, **kwargs)
        self.split_list = split_list
        self.instance_masks = instance_masks
        self.classes = list(classes) if classes else None
        self._parsed: dict[Path, Any] = {}

    def _xml_files(self, split: str) -> list[Path] | None:
        listing = self.data_root() / self.split_list.format(split=split)
        if not listing.is_file():
            return None
        folder = self.data_root() / self.annotations_template.format(split=split)
        return [folder / f"{line.split()[0]}.xml" for line in listing.read_text().splitlines() if line.strip()]  # fmt: skip

    def _class_names(self) -> list[str]:
        if self.classes is None:
            found = set()
            for split in SPLITS:
                for path in self._xml_files(split) or []:
                    parsed = self._parse(path)
                    found.update(o["name"] for o in (parsed or {}).get("objects", []))
            self.classes = sorted(found)
        return self.classes

    def _parse(self, path: Path) -> Any:
        if path not in self._parsed:
            if not path.is_file():
                self.report.problem("missing_annotation_file", f"{path}: listed in the split file but missing")  # fmt: skip
                self._parsed[path] = None
            else:
                self._parsed[path] = parse_xml(path, self.report)
        return self._parsed[path]

    def load_index(self, split: str) -> CocoIndex | None:
        files = self._xml_files(split)
        if files is None:
            if split in self.required_splits:
                listing = self.data_root() / self.split_list.format(split=split)
                raise ConfigError(f"data format 'voc': split list for '{split}' not found: {listing} (config keys data.root / data.split_list)")  # fmt: skip
            return None
        names = self._class_names()
        files = [p for p in files if self._parse(p) is not None]
        masks = self.data_root() / self.instance_masks if self.task == "instance_segmentation" else None  # fmt: skip
        data, places = read_voc(files, names, self.report, [self._parsed[p] for p in files], masks)  # fmt: skip
        folder = self.data_root() / self.annotations_template.format(split=split)
        return index_coco(data, folder, self.image_dir(split), self.report, self.task, self.verify_images, self.max_image_pixels, places)  # fmt: skip
