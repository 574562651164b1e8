"""COCO reader: one annotation file + image folder -> validated records -> per-task samples.

Validation happens once at setup (:func:`load_coco`), with every problem named by file and
annotation id; samples are then built per task by :class:`CocoDataset`:

* classification: the category of the largest non-crowd annotation (multi-label: all categories);
* semantic_segmentation: index mask, 0 = background, class i -> i+1, crowd regions = 255 (ignore).
  Overlaps: annotations are painted in file order, so a later annotation wins its pixels;
* detection / instance_segmentation: xyxy boxes (converted from COCO xywh), contiguous labels,
  iscrowd, the original image id, and per-instance binary masks for instance segmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.data.images import open_image, oriented_size
from visionkit.data.labels import IGNORE_INDEX, LabelMap
from visionkit.data.validation import LOADING_HINT, BadDataReport, check_image_files
from visionkit.errors import DataError

MASK_TASKS = ("semantic_segmentation", "instance_segmentation")
BOX_TOLERANCE = 1.0  # pixels a box may overshoot the image border before it counts as outside


@dataclass
class ImageRecord:
    """One image and its validated annotations (bbox xyxy, category_id, iscrowd, ...)."""

    id: int
    path: Path
    width: int
    height: int
    anns: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CocoIndex:
    """Validated content of an annotation file."""

    ann_file: Path
    categories: list[dict[str, Any]]
    records: list[ImageRecord]

    @property
    def label_map(self) -> LabelMap:
        return LabelMap.from_categories(self.categories)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"annotation file {path}: expected a JSON object, got {type(data).__name__}"
        )
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"annotation file {path}: missing or invalid '{key}' list")
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and bool(np.isfinite(v))


def _polygon_area(poly: list[float]) -> float:
    x, y = np.asarray(poly[0::2], float), np.asarray(poly[1::2], float)
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _check_segmentation(seg: Any, h: int, w: int) -> str | None:
    """None when ``seg`` is a usable polygon list or RLE for an h x w image, else the reason."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not isinstance(size, list | tuple) or list(size) != [h, w]:
            return f"RLE size {size} differs from the image size [{h}, {w}]"
        if not isinstance(counts, str | list) or not counts:
            return "RLE without counts"
        return None
    if not isinstance(seg, list) or not seg:
        return "empty segmentation"
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            return f"malformed polygon (needs >= 3 x,y pairs): {str(poly)[:60]}"
        if not all(_is_number(v) for v in poly):
            return "polygon with non-numeric coordinates"
        if _polygon_area(poly) == 0:
            return f"degenerate polygon (zero area): {str(poly)[:60]}"
    return None


def _read_categories(ann_file: Path, categories: list[Any]) -> set[int]:
    """The category ids; an empty, malformed or duplicated list is a DataError naming the file."""
    if not categories:
        raise DataError(
            f"annotation file {ann_file}: 'categories' is empty; it must list every class as "
            '{"id": <int>, "name": <str>}'
        )
    ids: set[int] = set()
    for cat in categories:
        if not isinstance(cat, dict) or "id" not in cat or "name" not in cat:
            raise DataError(f"{ann_file}: category without 'id' or 'name': {cat}")
        if not isinstance(cat["id"], int) or isinstance(cat["id"], bool):
            raise DataError(f"{ann_file}: category id {cat['id']!r} is not an integer")
        if cat["id"] in ids:
            raise DataError(f"{ann_file}: category id {cat['id']} is listed twice")
        ids.add(cat["id"])
    return ids


def _image_entries(ann_file: Path, images: list[Any], report: BadDataReport) -> dict[int, dict]:
    """Image entries by id; malformed entries and every entry of a duplicated id are problems
    (annotations cannot tell such images apart)."""
    by_id: dict[int, list[dict]] = {}
    for img in images:
        if not isinstance(img, dict) or "id" not in img or "file_name" not in img:
            report.problem(
                "malformed_image_entry",
                f"{ann_file}: image entry without 'id' or 'file_name': {img}",
            )
            continue
        if not isinstance(img["id"], int) or isinstance(img["id"], bool):
            report.problem(
                "malformed_image_entry", f"{ann_file}: image id {img['id']!r} is not an integer"
            )
            continue
        by_id.setdefault(img["id"], []).append(img)
    entries = {}
    for image_id, same in by_id.items():
        if len(same) == 1:
            entries[image_id] = same[0]
            continue
        names = ", ".join(str(i["file_name"]) for i in same)
        for _ in same:
            report.problem(
                "duplicate_image_id",
                f"{ann_file}: image id {image_id} is used by {len(same)} images ({names})",
            )
    return entries


def _declared_size(img: dict) -> tuple[int, int] | str | None:
    """(width, height) from the entry, None when absent, or the reason it is unusable."""
    width, height = img.get("width"), img.get("height")
    if width is None and height is None:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height)):
        return f"width/height {width!r}/{height!r} are not positive integers"
    return int(width), int(height)


def load_coco(
    ann_file: str | Path,
    image_dir: str | Path,
    report: BadDataReport,
    task: str = "detection",
    verify: str = "header",
    max_pixels: int | None = None,
) -> CocoIndex:
    """Parse and validate a COCO file; problems go to ``report`` (raise or skip-and-count).

    Every image file is checked at ``verify`` level (in parallel) and, unless ``verify=none``, its
    size compared with the file's width/height, so nothing surfaces later in a loader worker."""
    ann_file = Path(ann_file)
    return index_coco(_read_json(ann_file), ann_file, image_dir, report, task, verify, max_pixels)


def index_coco(
    data: dict[str, Any],
    ann_file: Path,
    image_dir: str | Path,
    report: BadDataReport,
    task: str = "detection",
    verify: str = "header",
    max_pixels: int | None = None,
    places: dict[tuple[str, int], str] | None = None,
) -> CocoIndex:
    """Validate COCO-structured ``data`` (read from ``ann_file`` or converted from another format).

    ``places`` names where an image (``("image", id)``) or annotation (``("ann", id)``) came from
    in a converted format (file and line or object), so messages point at the user's file."""
    image_dir = Path(image_dir)
    places = places or {}
    categories = data["categories"]
    cat_ids = _read_categories(ann_file, categories)
    entries = _image_entries(ann_file, data["images"], report)
    records: dict[int, ImageRecord] = {}
    paths = [image_dir / str(img["file_name"]) for img in entries.values()]
    checks = check_image_files(paths, verify, max_pixels)
    for (image_id, img), check in zip(entries.items(), checks, strict=True):
        where = places.get(("image", image_id)) or f"{ann_file}: image id {image_id}"
        if check.reason is not None:
            report.problem(check.kind or "unreadable_image", f"{where}: {check.reason}")
            continue
        declared = _declared_size(img)
        if isinstance(declared, str):
            report.problem("malformed_image_entry", f"{where} ({check.path.name}): {declared}")
            continue
        actual = check.size
        if actual is None and declared is None:  # verify=none and no size in the file
            with open_image(check.path, max_pixels) as im:
                actual = oriented_size(im)
        if declared is not None and actual is not None and declared != actual:
            report.problem(
                "image_size_mismatch",
                f"{where}: {check.path} is {actual[0]}x{actual[1]} but the annotation file "
                f"says {declared[0]}x{declared[1]}",
            )
            continue
        width, height = declared or actual  # type: ignore[misc]
        records[image_id] = ImageRecord(image_id, check.path, width, height)
    skipped_images = {i["id"] for i in data["images"] if isinstance(i, dict) and "id" in i}
    skipped_images -= set(records)
    needs_masks = task in MASK_TASKS
    seen_ann_ids: dict[Any, Any] = {}
    for ann in data["annotations"]:
        if not isinstance(ann, dict) or not isinstance(ann.get("id"), int):
            report.problem(
                "malformed_annotation", f"{ann_file}: annotation without an integer 'id': {ann}"
            )
            continue
        aid = ann["id"]
        where = places.get(("ann", aid)) or f"{ann_file}: annotation id {aid}"
        image_id = ann.get("image_id")
        if aid in seen_ann_ids:
            report.problem(
                "duplicate_annotation_id",
                f"{where} (image id {image_id}) is used twice (first for image id "
                f"{seen_ann_ids[aid]}); annotation ids must be unique",
            )
            continue
        seen_ann_ids[aid] = image_id
        if isinstance(image_id, int) and image_id in skipped_images:
            report.skipped["annotation_of_skipped_image"] += 1
            continue
        rec = records.get(image_id) if isinstance(image_id, int) else None
        if rec is None:
            report.problem("orphan_annotation", f"{where}: unknown image id {image_id}")
            continue
        if ("ann", aid) not in places:
            where = f"{where} (image {rec.path.name})"
        cid = ann.get("category_id")
        if not isinstance(cid, int) or cid not in cat_ids:
            report.problem("unknown_category", f"{where}: unknown category id {cid}")
            continue
        box = ann.get("bbox")
        if not isinstance(box, list | tuple) or len(box) != 4 or not all(map(_is_number, box)):
            report.problem("malformed_box", f"{where}: bbox {box} is not [x, y, width, height]")
            continue
        x, y, w, h = (float(v) for v in box)
        if not (w > 0 and h > 0):
            report.problem(
                "zero_area_box", f"{where}: bbox {list(box)} has zero or negative width/height"
            )
            continue
        t = BOX_TOLERANCE
        if x < -t or y < -t or x + w > rec.width + t or y + h > rec.height + t:
            fully = x >= rec.width or y >= rec.height or x + w <= 0 or y + h <= 0
            report.problem(
                "box_outside_image",
                f"{where}: bbox {list(box)} lies {'' if fully else 'partly '}outside the "
                f"{rec.width}x{rec.height} image",
            )
            continue
        area, iscrowd = ann.get("area", w * h), ann.get("iscrowd", 0) or 0
        if not _is_number(area) or iscrowd not in (0, 1):
            report.problem(
                "malformed_annotation", f"{where}: area {area!r} / iscrowd {iscrowd!r} invalid"
            )
            continue
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(rec.width)), min(y + h, float(rec.height))
        seg = ann.get("segmentation")
        if needs_masks:
            reason = _check_segmentation(seg, rec.height, rec.width)
            if reason is not None:
                report.problem("bad_segmentation", f"{where}: {reason}")
                continue
        rec.anns.append(
            {
                "id": aid,
                "category_id": int(cid),
                "bbox": (x0, y0, x1, y1),
                "iscrowd": int(iscrowd),
                "area": float(area),
                "segmentation": seg,
            }
        )
    for rec in records.values():
        if not rec.anns:
            report.note("image_without_annotations")
    return CocoIndex(ann_file, categories, list(records.values()))


def index_to_coco(index: CocoIndex, image_dir: Path | None = None) -> dict[str, Any]:
    """The validated content of ``index`` as a COCO dict (boxes back to xywh; file names relative
    to ``image_dir`` when given, else the bare names)."""
    images, annotations = [], []
    for rec in index.records:
        name = rec.path.relative_to(image_dir).as_posix() if image_dir is not None else rec.path.name  # fmt: skip
        images.append({"id": rec.id, "file_name": name, "width": rec.width, "height": rec.height})
        for a in rec.anns:
            x0, y0, x1, y1 = a["bbox"]
            entry = {
                "id": a["id"],
                "image_id": rec.id,
                "category_id": a["category_id"],
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": a["area"],
                "iscrowd": a["iscrowd"],
            }
            if a.get("segmentation") is not None:
                entry["segmentation"] = a["segmentation"]
            annotations.append(entry)
    return {"images": images, "annotations": annotations, "categories": index.categories}


def ann_to_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """An annotation's polygon(s) or RLE -> uint8 [H,W] binary mask (pycocotools rasterisation)."""
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, height, width)
    else:
        rle = seg
    return mask_utils.decode(rle)


class CocoDataset:
    """Map-style dataset over validated records, producing ``(tv Image uint8, target)`` samples."""

    def __init__(
        self,
        records: list[ImageRecord],
        task: str,
        label_map: LabelMap,
        transform: Any = None,
        multi_label: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        self.records = records
        self.task = task
        self.label_map = label_map
        self.transform = transform
        self.multi_label = multi_label
        self.max_pixels = max_pixels  # decompression-bomb limit, applied in loader workers too

    def __len__(self) -> int:
        return len(self.records)

    def _image(self, rec: ImageRecord) -> Any:
        from torchvision import tv_tensors

        from visionkit.data.images import load_image

        image = load_image(rec.path, self.max_pixels)
        if tuple(image.shape[1:]) != (rec.height, rec.width):
            raise DataError(
                f"image {rec.path} is {image.shape[2]}x{image.shape[1]} but its annotation file "
                f"says {rec.width}x{rec.height}"
            )
        return tv_tensors.Image(image)

    def target(self, rec: ImageRecord) -> Any:
        """The untransformed target of ``rec`` for this dataset's task."""
        import torch
        from torchvision import tv_tensors

        lm = self.label_map
        if self.task == "classification":
            anns = [a for a in rec.anns if not a["iscrowd"]]
            if self.multi_label:
                return sorted({lm.to_index(a["category_id"]) for a in anns})
            largest = max(anns, key=lambda a: a["area"])
            return lm.to_index(largest["category_id"])
        if self.task == "semantic_segmentation":
            mask = np.zeros((rec.height, rec.width), np.uint8)
            for a in rec.anns:  # file order: later annotations win overlapping pixels
                m = ann_to_mask(a, rec.height, rec.width).astype(bool)
                mask[m] = IGNORE_INDEX if a["iscrowd"] else lm.to_index(a["category_id"]) + 1
            return tv_tensors.Mask(torch.from_numpy(mask))
        boxes = torch.tensor([a["bbox"] for a in rec.anns], dtype=torch.float32).reshape(-1, 4)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(
                boxes, format="XYXY", canvas_size=(rec.height, rec.width)
            ),
            "labels": torch.tensor(
                [lm.to_index(a["category_id"]) for a in rec.anns], dtype=torch.int64
            ),
            "iscrowd": torch.tensor([a["iscrowd"] for a in rec.anns], dtype=torch.int64),
            "image_id": rec.id,
        }
        if self.task == "instance_segmentation":
            masks = np.zeros((len(rec.anns), rec.height, rec.width), np.uint8)
            for i, a in enumerate(rec.anns):
                masks[i] = ann_to_mask(a, rec.height, rec.width)
            target["masks"] = tv_tensors.Mask(torch.from_numpy(masks))
        return target

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        rec = self.records[index]
        try:
            sample = (self._image(rec), self.target(rec))
        except DataError as exc:
            raise DataError(f"{exc} ({LOADING_HINT})") from None
        return self.transform(sample) if self.transform is not None else sample
