"""``masks``: semantic segmentation from an image folder and a mask folder of class-index PNGs.

Layout: ``root/images/<split>/<name>.<ext>`` and ``root/masks/<split>/<name>.png`` (same stem),
plus a class file ``root/classes.yaml`` (or .json): either a list of names (pixel value i = class
i) or a mapping ``{pixel value: name}`` for arbitrary values. 255 is ignore; palette PNGs are read
as indices. Background is explicit: it is whatever class the file names (usually value 0).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.datamodule import SPLITS, VisionDataModule
from visionkit.data.folders.reader import (
    ImageMaskPairs,
    MaskValueError,
    list_images,
    open_mask,
    read_mask,
)
from visionkit.data.images import oriented_size
from visionkit.data.labels import IGNORE_INDEX, LabelMap
from visionkit.data.validation import check_image_file, parallel_map
from visionkit.errors import ConfigError, DataError


def read_class_file(path: Path) -> LabelMap:
    """A list of names or a ``{value: name}`` mapping -> LabelMap (ids = pixel values)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"class file not found: {path} (config key data.classes)") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one message naming the file
        raise DataError(f"class file {path} cannot be parsed: {exc}") from None
    if isinstance(data, dict) and "classes" in data:
        data = data["classes"]
    if isinstance(data, list):
        names, ids = [str(n) for n in data], list(range(len(data)))
    elif isinstance(data, dict):
        try:
            pairs = sorted((int(k), str(v)) for k, v in data.items())
        except (TypeError, ValueError):
            raise DataError(f"class file {path}: keys must be pixel values (integers)") from None
        ids, names = [p[0] for p in pairs], [p[1] for p in pairs]
    else:
        raise DataError(f"class file {path}: expected a list of names or a {{value: name}} mapping")
    if not names:
        raise DataError(f"class file {path} lists no classes")
    bad = [i for i in ids if not 0 <= i < 255]
    if bad:
        raise DataError(f"class file {path}: pixel values {bad} outside 0..254 (255 = ignore)")
    return LabelMap(names, ids)


def value_lut(label_map: LabelMap) -> np.ndarray:
    """uint8 [256]: pixel value -> training index; 255 -> 255 (ignore); unknown -> 254."""
    if label_map.num_classes > 254:
        raise ConfigError("the masks format supports at most 254 classes")
    lut = np.full(256, 254, np.uint8)
    for index, value in enumerate(label_map.ids):
        lut[value] = index
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def check_pair(
    image: Path, mask: Path, lut: np.ndarray, verify: str, max_pixels: int | None = None
) -> tuple[str, str] | None:
    """None when ``image`` and its ``mask`` are usable at level ``verify``, else (kind, reason):
    the mask must exist and be single-channel; from ``header`` on its size must equal the image's;
    ``full`` decodes both and checks every mask value against the class file."""
    check = check_image_file(image, verify, max_pixels)
    if check.reason is not None:
        return check.kind or "unreadable_image", check.reason
    if not mask.is_file():
        return "missing_mask", f"missing mask file {mask} for image {image}"
    if verify == "none":
        return None
    try:
        with open_mask(mask, max_pixels) as im:
            size = oriented_size(im)
        if size != check.size:
            return "mask_size_mismatch", (
                f"mask {mask} is {size[0]}x{size[1]} but image {image} is "
                f"{check.size[0]}x{check.size[1]}"  # type: ignore[index]
            )
        if verify == "full":
            read_mask(mask, lut, max_pixels)
    except MaskValueError as exc:
        return "bad_mask_values", str(exc)
    except DataError as exc:
        return "unreadable_mask", str(exc)
    return None


class MasksDataModule(VisionDataModule):
    """Image + class-index mask folders; see the module docstring."""

    FORMAT = "masks"
    SUPPORTED_TASKS = ("semantic_segmentation",)

    def __init__(
        self,
        images: str = "images/{split}",
        masks: str = "masks/{split}",
        classes: str = "classes.yaml",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.images_template = images
        self.masks_template = masks
        self.classes_file = classes

    def build_splits(self) -> tuple[LabelMap, dict[str, Any]]:
        self.require_root()
        label_map = read_class_file(self.root / self.classes_file)
        lut = value_lut(label_map)
        datasets = {}
        for split in SPLITS:
            image_dir = self.root / self.images_template.format(split=split)
            mask_dir = self.root / self.masks_template.format(split=split)
            if not image_dir.is_dir():
                if split in ("train", "val"):
                    raise ConfigError(f"data format 'masks': image folder not found: {image_dir}")
                continue
            images, others = list_images(image_dir)
            for other in others:
                self.report.note("non_image_file", f"not an image: {other}")
            masks = [mask_dir / i.relative_to(image_dir).with_suffix(".png") for i in images]
            if mask_dir.is_dir():
                expected = set(masks)
                for orphan in list_images(mask_dir)[0]:
                    if orphan not in expected:
                        self.report.problem(
                            "mask_without_image",
                            f"mask {orphan} has no image in {image_dir} (same name, any image "
                            "suffix)",
                        )
            checks = parallel_map(
                lambda pair: check_pair(*pair, lut, self.verify_images, self.max_image_pixels),
                list(zip(images, masks, strict=True)),
            )
            pairs = []
            for image, mask, problem in zip(images, masks, checks, strict=True):
                if problem is not None:
                    self.report.problem(*problem)
                    continue
                pairs.append((image, mask))
            datasets[split] = ImageMaskPairs(pairs, lut)
        if not len(datasets["train"]):
            raise ConfigError(f"data format 'masks': no training images in {self.root}")
        return label_map, datasets
