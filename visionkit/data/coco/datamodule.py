"""``coco`` format: one COCO annotation file and one image folder per split (pycocotools style).

Serves detection, instance segmentation, semantic segmentation (instance masks rasterised, later
annotations win overlaps, crowd = ignore) and classification (largest annotation's category).
Paths are templates relative to ``root`` with ``{split}`` replaced by train / val / test; a
missing test split is allowed (``has_split('test')`` is then false).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionkit.data.coco.reader import CocoDataset, CocoIndex, index_to_coco, load_coco
from visionkit.data.datamodule import SPLITS, VisionDataModule
from visionkit.data.labels import LabelMap
from visionkit.errors import ConfigError
from visionkit.files import atomic_open


class CocoDataModule(VisionDataModule):
    """COCO files per split; see the module docstring."""

    FORMAT = "coco"

    def __init__(
        self,
        images: str = "{split}",
        annotations: str = "annotations/instances_{split}.json",
        required_splits: tuple[str, ...] = ("train", "val"),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.images_template = images
        self.annotations_template = annotations
        self.required_splits = tuple(required_splits)
        self.indexes: dict[str, CocoIndex] = {}

    def data_root(self) -> Path:
        """The directory the path templates are relative to."""
        return self.root

    def annotation_file(self, split: str) -> Path | None:
        return self.data_root() / self.annotations_template.format(split=split)

    def ground_truth_file(self, split: str, out_dir: str | Path) -> Path | None:
        """The COCO file ``split`` is evaluated against: the annotation file itself, or, when
        ``on_bad=skip`` removed something, the validated annotations written as
        ``out_dir/ground_truth_<split>.json`` (skipped annotations are not counted as misses)."""
        ann = self.annotation_file(split)
        index = self.indexes.get(split)
        if index is None:
            return None
        if ann is not None and ann.is_file() and not self.report.skipped:
            return ann  # formats converted to COCO (voc, yolo) always write the validated file
        data = index_to_coco(index)
        path = Path(out_dir) / f"ground_truth_{split}.json"
        with atomic_open(path) as file:
            json.dump(data, file)
        return path

    def image_sizes(self, split: str) -> dict[int, tuple[int, int]]:
        """``{image_id: (height, width)}`` of the split's validated images (the evaluator undoes
        evaluation resizes with them); empty when the split is absent."""
        index = self.indexes.get(split)
        return {} if index is None else {r.id: (r.height, r.width) for r in index.records}

    def image_dir(self, split: str) -> Path:
        return self.data_root() / self.images_template.format(split=split)

    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        datasets: dict[str, Any] = {}
        label_map: LabelMap | None = None
        self.require_root()
        for split in SPLITS:
            index = self.load_index(split)
            if index is None:
                continue
            ann = index.ann_file
            self.indexes[split] = index
            split_map = index.label_map
            if label_map is None:
                label_map = split_map
            elif split_map.ids != label_map.ids:
                raise ConfigError(
                    f"{ann}: categories {split_map.ids} differ from the train split's "
                    f"{label_map.ids}; all splits must share one category list"
                )
            records = index.records
            if self.task == "classification":
                records = self._labelled(records, ann)
            datasets[split] = CocoDataset(records, self.task, label_map, None, self.multi_label)
        if label_map is None:
            raise ConfigError(
                f"data format '{self.FORMAT}': no split found under {self.data_root()}"
            )
        if self.task == "semantic_segmentation":
            label_map = label_map.with_background()
            # datasets keep the instance map: mask value = instance index + 1 = this map's index
        return label_map, datasets

    def load_index(self, split: str) -> CocoIndex | None:
        """The validated annotations of ``split`` (None: the split is absent and optional).

        Other formats (voc, yolo) override this: they read their files into the same structure."""
        ann = self.annotation_file(split)
        if ann is None or not ann.is_file():
            if split in self.required_splits:
                raise ConfigError(
                    f"data format 'coco': annotation file for split '{split}' not found: "
                    f"{ann} (config keys data.root / data.annotations)"
                )
            return None
        return load_coco(ann, self.image_dir(split), self.report, self.task, self.verify_images, self.max_image_pixels)  # fmt: skip

    def _labelled(self, records: list, ann: Path) -> list:
        """Classification needs a label: images without (non-crowd) annotations are skipped, counted."""
        kept = [r for r in records if any(not a["iscrowd"] for a in r.anns)]
        dropped = len(records) - len(kept)
        if dropped:
            self.report.skipped["unlabelled_image_for_classification"] += dropped
            self.report.examples.setdefault(
                "unlabelled_image_for_classification", f"{ann}: {dropped} images without a label"
            )
        return kept


class ConvertedDataModule(CocoDataModule):
    """Base of the formats read into the COCO structure (voc, yolo; they override ``load_index``):
    detection and instance segmentation. They have no COCO file: evaluation uses the validated
    annotations, written as COCO (``ground_truth_file``)."""

    SUPPORTED_TASKS = ("detection", "instance_segmentation")

    def annotation_file(self, split: str) -> Path | None:
        return None
