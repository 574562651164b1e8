"""YOLO txt reader and writer: ``labels/<split>/<stem>.txt`` beside ``images/<split>/<stem>.<ext>``.

A line is ``class cx cy w h`` (a box) or ``class x1 y1 x2 y2 ... xn yn`` (a polygon, instance
segmentation), coordinates normalised to 0..1. Class names come from ``data.yaml`` (``names``: a
list or an index -> name mapping) or ``classes.txt`` (one per line). Read into COCO structure
(category id = class index + 1, polygons in pixels) and validated as a COCO file; every problem
names the label file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from visionkit.data.folders.reader import IMAGE_EXTENSIONS
from visionkit.data.validation import BadDataReport, check_image_files
from visionkit.errors import DataError

NAME_FILES = ("data.yaml", "dataset.yaml", "classes.txt")


def read_names(root: Path, names_file: str | None = None) -> list[str]:
    """Class names from ``names_file`` (relative to ``root``) or the first of NAME_FILES found."""
    candidates = [root / names_file] if names_file else [root / n for n in NAME_FILES]
    for path in candidates:
        if not path.is_file():
            continue
        if path.suffix == ".txt":
            return [line.strip() for line in path.read_text().splitlines() if line.strip()]
        import yaml

        try:
            names = (yaml.safe_load(path.read_text()) or {}).get("names")
        except (yaml.YAMLError, AttributeError) as exc:
            raise DataError(f"{path}: not a YOLO data.yaml with 'names' ({exc})") from None
        if isinstance(names, dict) and sorted(names) == list(range(len(names))):
            return [str(names[i]) for i in range(len(names))]
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        raise DataError(f"{path}: 'names' must be a list or a mapping 0..K-1 -> name, got {names!r}")  # fmt: skip
    raise DataError(f"YOLO: no class names: none of {[str(c) for c in candidates]} exists (config key data.names_file)")  # fmt: skip


def _parse_line(line: str, k: int) -> tuple[int, list[float]] | str:
    parts = line.split()
    try:
        cls, values = int(parts[0]), [float(v) for v in parts[1:]]
    except ValueError:
        return f"not numbers: '{line[:60]}'"
    if not 0 <= cls < k:
        return f"class {cls} is not in 0..{k - 1} (the {k} names)"
    if len(values) != 4 and (len(values) < 6 or len(values) % 2):
        return f"{len(values)} coordinates: a box has 4 (cx cy w h), a polygon an even number >= 6"
    if any(not 0.0 <= v <= 1.0 for v in values):
        return "coordinates must be normalised to 0..1"
    return cls, values


def read_yolo(
    image_dir: Path,
    label_dir: Path,
    names: list[str],
    report: BadDataReport,
    task: str,
    max_pixels: int | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, int], str]]:
    """COCO-structured data of one split and the place (label file and line) of each annotation.

    Image sizes come from the image headers (normalised coordinates need them); an image without
    a label file has no objects; a label file without an image is a reported problem."""
    images = sorted(p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    stems = {p.relative_to(image_dir).with_suffix("") for p in images}
    for label in sorted(label_dir.rglob("*.txt")) if label_dir.is_dir() else []:
        if label.relative_to(label_dir).with_suffix("") not in stems:
            report.problem("orphan_annotation", f"{label}: no image {label.stem}.* in {image_dir}")
    entries, anns, places = [], [], {}
    checks = check_image_files(images, "header", max_pixels)
    for image_id, (path, check) in enumerate(zip(images, checks, strict=True), start=1):
        if (
            check.reason is not None or check.size is None
        ):  # counted again (and named) by the COCO check
            entries.append({"id": image_id, "file_name": str(path.relative_to(image_dir))})
            continue
        w, h = check.size
        entries.append({"id": image_id, "file_name": str(path.relative_to(image_dir)), "width": w, "height": h})  # fmt: skip
        label = label_dir / path.relative_to(image_dir).with_suffix(".txt")
        places[("image", image_id)] = f"{path}"
        lines = label.read_text().splitlines() if label.is_file() else []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label}: line {n}"
            parsed = _parse_line(line, len(names))
            if isinstance(parsed, str):
                report.problem("malformed_box", f"{where}: {parsed}")
                continue
            cls, v = parsed
            aid = len(anns) + 1
            if len(v) == 4:
                cx, cy, bw, bh = v
                if task == "instance_segmentation":
                    report.problem("bad_segmentation", f"{where}: a box line, but instance segmentation needs a polygon")  # fmt: skip
                    continue
                bbox, seg = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h], None
            else:
                xs, ys = [x * w for x in v[0::2]], [y * h for y in v[1::2]]
                bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                seg = [[c for xy in zip(xs, ys, strict=True) for c in xy]]
            ann = {"id": aid, "image_id": image_id, "category_id": cls + 1, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0}  # fmt: skip
            if seg is not None:
                ann["segmentation"] = seg
            anns.append(ann)
            places[("ann", aid)] = where
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return {"images": entries, "annotations": anns, "categories": categories}, places


def write_yolo(data: dict[str, Any], label_dir: Path, polygons: bool = True) -> list[str]:
    """COCO-structured ``data`` as YOLO label files (one per image, ``<stem>.txt``) in
    ``label_dir``; returns the class names in YOLO index order (categories sorted by id).
    Polygons are written when ``polygons`` and the annotation has one (one line per polygon
    part), else its box. Crowd regions have no YOLO form and are refused; so are RLE masks unless
    ``polygons`` is off (then their boxes are written)."""
    cats = sorted(data["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(cats)}
    by_image: dict[Any, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    for img in data["images"]:
        w, h = img.get("width"), img.get("height")
        if not w or not h:
            raise DataError(f"image id {img['id']} ({img['file_name']}): YOLO needs its width and height")  # fmt: skip
        lines = []
        for a in by_image.get(img["id"], []):
            seg = a.get("segmentation")
            if a.get("iscrowd"):
                raise DataError(f"annotation id {a['id']}: crowd regions have no YOLO form")
            if polygons and isinstance(seg, dict):
                raise DataError(f"annotation id {a['id']}: an RLE mask has no YOLO polygon form (convert with --boxes to write boxes only)")  # fmt: skip
            if polygons and seg:  # a list of polygons (RLE refused above)
                for poly in seg:  # one line per polygon part
                    coords = [v / (w if i % 2 == 0 else h) for i, v in enumerate(poly)]
                    lines.append(" ".join([str(index[a["category_id"]]), *(repr(c) for c in coords)]))  # fmt: skip
                continue
            x, y, bw, bh = a["bbox"]
            coords = [(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]
            lines.append(" ".join([str(index[a["category_id"]]), *(repr(c) for c in coords)]))
        path = label_dir / Path(str(img["file_name"])).with_suffix(".txt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + ("\n" if lines else ""))
    return [str(c["name"]) for c in cats]
