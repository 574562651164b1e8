"""``python -m visionkit convert``: COCO JSON from Pascal VOC or YOLO, and YOLO from COCO.

The source is read and validated exactly as training reads it (same bad-data rules: one error
naming the file and object/line, or ``--on-bad skip`` to skip and count), so the written file
holds what training would see. Examples::

    python -m visionkit convert voc coco --root VOCdevkit/VOC2007 --split val --output val.json
    python -m visionkit convert yolo coco --root my_yolo --split train --output train.json
    python -m visionkit convert coco yolo --annotations train.json --images imgs --output out --split train
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from visionkit.errors import ConfigError

ROUTES = {("voc", "coco"), ("yolo", "coco"), ("coco", "yolo")}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="visionkit convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", choices=["voc", "yolo", "coco"], help="format read")
    parser.add_argument("target", choices=["coco", "yolo"], help="format written")
    parser.add_argument("--root", type=Path, help="dataset folder (voc, yolo)")
    parser.add_argument("--split", default="train", help="split to convert (default: train)")
    parser.add_argument("--annotations", type=Path, help="COCO annotation file (coco source)")
    parser.add_argument("--images", type=Path, help="image folder (coco source; default: beside)")
    parser.add_argument("--masks", help="voc: instance mask folder under --root (e.g. SegmentationObject)")  # fmt: skip
    parser.add_argument("--classes", nargs="*", help="voc: class list and order (default: names found)")  # fmt: skip
    parser.add_argument("--output", type=Path, required=True, help="COCO file, or YOLO dataset folder")  # fmt: skip
    parser.add_argument("--boxes", action="store_true", help="yolo target: boxes only, no polygons (RLE masks allowed)")  # fmt: skip
    parser.add_argument("--on-bad", choices=["error", "skip"], default="error")
    parser.add_argument("--quiet", action="store_true", help="no progress bars (none unless stderr is a terminal)")  # fmt: skip
    args = parser.parse_args(list(argv))
    from visionkit.progress import shown

    with shown(not args.quiet):
        return convert(args)


def convert(args: argparse.Namespace) -> int:
    """The conversion ``args`` ask for; prints what was written."""
    if (args.source, args.target) not in ROUTES:
        raise ConfigError(f"convert: {args.source} -> {args.target} is not supported; routes: {sorted(ROUTES)}")  # fmt: skip
    from visionkit.data.coco.reader import index_coco, index_to_coco, load_coco
    from visionkit.data.validation import BadDataReport

    report = BadDataReport(args.on_bad, source=args.source)
    if args.source == "coco":
        if args.annotations is None:
            raise ConfigError("convert coco: --annotations <file> is required")
        images = args.images or args.annotations.parent
        index = load_coco(args.annotations, images, report, "instance_segmentation" if _segmented(_annotations(args.annotations)) else "detection")  # fmt: skip
    else:
        if args.root is None:
            raise ConfigError(f"convert {args.source}: --root <dataset folder> is required")
        data, places, images, where = _read(args, report)
        task = "instance_segmentation" if _segmented(data["annotations"]) else "detection"
        index = index_coco(data, where, images, report, task, "header", None, places)
    coco = index_to_coco(index, images)
    if args.target == "coco":
        from visionkit.files import atomic_open

        args.output.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(args.output) as file:
            json.dump(coco, file)
        written = str(args.output)
    else:
        from visionkit.data.yolo.reader import write_yolo

        names = write_yolo(coco, args.output / "labels" / args.split, polygons=not args.boxes)
        (args.output / "classes.txt").write_text("\n".join(names) + "\n")
        written = f"{args.output}/labels/{args.split} and classes.txt (images go to {args.output}/images/{args.split})"  # fmt: skip
    skipped = sum(report.skipped.values())
    print(f"{len(coco['images'])} images, {len(coco['annotations'])} annotations -> {written}" + (f" ({skipped} skipped: {dict(report.skipped)})" if skipped else ""))  # fmt: skip
    return 0


def _annotations(path: Path) -> list:
    """The annotation list of a COCO file (empty when unreadable: load_coco then names the problem)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data.get("annotations", []) if isinstance(data, dict) and isinstance(data.get("annotations"), list) else []  # fmt: skip


def _segmented(annotations: list) -> bool:
    """Every annotation has a segmentation: then it is validated (and kept) as instance data."""
    anns = [a for a in annotations if isinstance(a, dict)]
    return bool(anns) and all(a.get("segmentation") for a in anns)


def _read(args: argparse.Namespace, report) -> tuple[dict, dict, Path, Path]:
    """(COCO data, places, image folder, annotation source) of a VOC or YOLO split."""
    root = args.root
    if args.source == "voc":
        from visionkit.data.voc.reader import read_voc

        listing = root / "ImageSets" / "Main" / f"{args.split}.txt"
        folder = root / "Annotations"
        if listing.is_file():
            files = [folder / f"{line.split()[0]}.xml" for line in listing.read_text().splitlines() if line.strip()]  # fmt: skip
        else:
            files = sorted(folder.glob("*.xml"))
        if not files:
            raise ConfigError(
                f"convert voc: no annotation files in {folder} (split list {listing})"
            )
        masks = root / args.masks if args.masks else None
        from visionkit.data.voc.reader import parse_xml
        from visionkit.progress import track

        parsed = [parse_xml(p, report) for p in track(files, "reading VOC annotations")]
        data, places = read_voc(files, args.classes, report, parsed=parsed, masks_dir=masks)
        return data, places, root / "JPEGImages", folder
    from visionkit.data.yolo.reader import read_names, read_yolo

    images, labels = root / "images" / args.split, root / "labels" / args.split
    if not images.is_dir():
        raise ConfigError(f"convert yolo: image folder {images} not found (--root, --split)")
    data, places = read_yolo(images, labels, read_names(root), report, "detection")
    return data, places, images, labels
