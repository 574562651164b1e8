"""Pascal VOC reader and writer: one XML file per image (``<object>``: name, bndbox, difficult).

Read into COCO structure (``images``/``annotations``/``categories`` plus the place of every image
and object), validated by :func:`visionkit.data.coco.reader.index_coco` like a COCO file. VOC
boxes are 1-based inclusive pixel indices; as detectron2, ``[xmin - 1, ymin - 1, xmax, ymax]`` is
the box in pixel-edge coordinates. ``difficult`` objects become COCO ``iscrowd`` regions: not
trained on, and ignored in evaluation (a detection on them is neither a hit nor a false positive),
which is how VOC's own evaluation treats them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from visionkit.data.validation import BadDataReport
from visionkit.errors import DataError


def _text(node: ET.Element, tag: str) -> str | None:
    found = node.find(tag)
    return found.text.strip() if found is not None and found.text is not None else None


def _number(node: ET.Element, tag: str) -> float | None:
    value = _text(node, tag)
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def parse_xml(path: Path, report: BadDataReport) -> dict[str, Any] | None:
    """One annotation file: ``{filename, width, height, objects: [{name, box, difficult, where}]}``
    (None when the file itself is unusable: reported)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        report.problem("bad_annotation_file", f"{path}: not a readable VOC XML file ({exc})")
        return None
    filename = _text(root, "filename")
    if not filename:
        report.problem("malformed_image_entry", f"{path}: no <filename>")
        return None
    size = root.find("size")
    width = _number(size, "width") if size is not None else None
    height = _number(size, "height") if size is not None else None
    objects = []
    for k, obj in enumerate(root.findall("object"), start=1):
        where = f"{path}: object {k}"
        name = _text(obj, "name")
        box = obj.find("bndbox")
        coords = [_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")] if box is not None else []  # fmt: skip
        if not name or len(coords) != 4 or any(c is None for c in coords):
            report.problem("malformed_box", f"{where}: needs <name> and a numeric <bndbox> (xmin, ymin, xmax, ymax)")  # fmt: skip
            continue
        difficult = _text(obj, "difficult") in ("1", "true")
        objects.append({"name": name, "box": coords, "difficult": difficult, "index": k, "where": f"{where} ({name})"})  # fmt: skip
    return {"filename": filename, "width": width, "height": height, "objects": objects}


def read_voc(
    xml_files: list[Path],
    classes: list[str] | None,
    report: BadDataReport,
    parsed: list[dict[str, Any] | None] | None = None,
    masks_dir: Path | None = None,
) -> tuple[dict[str, Any], dict[tuple[str, int], str]]:
    """COCO-structured data and the place of each image/annotation; ``classes`` (None: the sorted
    names found) fixes the category ids 1..K; an object of another name is a reported problem.
    ``parsed``: the files' :func:`parse_xml` results when already read. ``masks_dir``: VOC's
    ``SegmentationObject`` folder (``<stem>.png``, pixel value k = the k-th object of the XML,
    255 = void): each object gets its mask as RLE (instance segmentation)."""
    contents = parsed if parsed is not None else [parse_xml(p, report) for p in xml_files]
    parsed = [(p, d) for p, d in zip(xml_files, contents, strict=True) if d is not None]
    names = (
        list(classes) if classes else sorted({o["name"] for _, d in parsed for o in d["objects"]})
    )
    if not names:
        raise DataError(f"VOC: no object in {len(xml_files)} annotation files and no data.classes given")  # fmt: skip
    ids = {n: i + 1 for i, n in enumerate(names)}
    images, anns, places = [], [], {}
    for image_id, (path, d) in enumerate(parsed, start=1):
        entry: dict[str, Any] = {"id": image_id, "file_name": d["filename"]}
        if d["width"] and d["height"]:  # VOC files written by some tools leave <size> at 0
            entry.update(width=int(d["width"]), height=int(d["height"]))
        images.append(entry)
        places[("image", image_id)] = f"{path} ({d['filename']})"
        instances = _instance_png(masks_dir / f"{path.stem}.png") if masks_dir is not None else None
        for obj in d["objects"]:
            if obj["name"] not in ids:
                report.problem("unknown_category", f"{obj['where']}: class '{obj['name']}' is not in data.classes {names}")  # fmt: skip
                continue
            x0, y0, x1, y1 = obj["box"]
            aid = len(anns) + 1
            anns.append({
                "id": aid, "image_id": image_id, "category_id": ids[obj["name"]],
                "bbox": [x0 - 1, y0 - 1, x1 - x0 + 1, y1 - y0 + 1],
                "area": (x1 - x0 + 1) * (y1 - y0 + 1), "iscrowd": int(obj["difficult"]),
            })  # fmt: skip
            places[("ann", aid)] = obj["where"]
            if masks_dir is not None:
                reason = _add_mask(
                    anns[-1], instances, obj["index"], masks_dir / f"{path.stem}.png"
                )
                if reason is not None:
                    anns.pop()
                    report.problem("bad_segmentation", f"{obj['where']}: {reason}")
    categories = [{"id": i, "name": n} for n, i in ids.items()]
    return {"images": images, "annotations": anns, "categories": categories}, places


def _instance_png(path: Path) -> Any:
    """The instance-index array of a SegmentationObject PNG (None when missing or unreadable)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except OSError:
        return None


def _add_mask(ann: dict[str, Any], instances: Any, k: int, path: Path) -> str | None:
    """Put object ``k``'s mask (pixels == k) into ``ann`` as RLE; the reason when impossible."""
    from visionkit.evaluation.coco_results import encode_mask

    if instances is None:
        return f"instance mask file {path} is missing or unreadable"
    mask = instances == k
    if instances.ndim != 2 or not mask.any():
        return f"{path} has no pixel of value {k} (this object's mask)"
    ann["segmentation"] = encode_mask(mask)
    ann["area"] = float(mask.sum())
    return None
