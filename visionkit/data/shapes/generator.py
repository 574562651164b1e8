"""The embedded ``shapes`` dataset: PNG images of coloured shapes on textured backgrounds plus a
real COCO annotation file per split, generated on first use, deterministic for a seed, cached.

Layout under ``<root>/<key>/`` (``key`` encodes every generation parameter, so variants coexist)::

    annotations/instances_{train,val,test}.json    COCO: boxes (xywh), polygons or RLE, areas
    {train,val,test}/000000.png ...

Category ids are deliberately NON-contiguous (1, 3, 5, ...), so the id <-> index mapping is always
exercised. Each image holds ``min_objects..max_objects`` shapes (``max_objects=1``: exactly one,
the classification setting; the classification label is the largest shape's category).
Z-order: shapes are drawn in annotation order, later ones on top. An annotation whose shape is
partly covered stores its *visible* region as RLE (bbox and area of the visible part); uncovered
shapes store their polygon. Placements leaving less than half of a shape visible are retried.
Generation writes into a temporary directory renamed into place (``os.replace``), so concurrent
processes (DDP ranks) never see a half-written dataset.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from visionkit.errors import ConfigError

SHAPE_NAMES = ("circle", "square", "triangle", "star", "cross", "semicircle")
CATEGORY_IDS = tuple(1 + 2 * i for i in range(len(SHAPE_NAMES)))  # 1, 3, 5, 7, 9, 11
SPLITS = ("train", "val", "test")
VERSION = 3  # bump when the drawing changes, so stale caches are not reused


@dataclass(frozen=True)
class ShapesSpec:
    """Generation parameters; ``key`` names the cache directory."""

    image_size: int = 64
    num_train: int = 2000
    num_val: int = 400
    num_test: int = 400
    min_objects: int = 1
    max_objects: int = 1
    min_size: float = 0.3  # shape radius as a fraction of the image side
    max_size: float = 0.45
    max_rotation: float = 30.0  # degrees either way from each shape's upright pose
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"data.image_size must be >= 16 for shapes, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"data.min_objects/max_objects must satisfy 1 <= min <= max, got "
                f"{self.min_objects}/{self.max_objects}"
            )
        if not 0.05 <= self.min_size <= self.max_size <= 0.5:
            raise ConfigError(
                f"data.min_size/max_size must satisfy 0.05 <= min <= max <= 0.5, got "
                f"{self.min_size}/{self.max_size}"
            )
        if not 0 <= self.max_rotation <= 180:
            raise ConfigError(f"data.max_rotation must be in [0, 180], got {self.max_rotation}")
        for split in SPLITS:
            if self.count(split) < 0:
                raise ConfigError(f"data.num_{split} must be >= 0")

    def count(self, split: str) -> int:
        return int(getattr(self, f"num_{split}"))

    @property
    def key(self) -> str:
        return (
            f"v{VERSION}_s{self.image_size}_n{self.num_train}-{self.num_val}-{self.num_test}"
            f"_o{self.min_objects}-{self.max_objects}_r{self.min_size:g}-{self.max_size:g}"
            f"_rot{self.max_rotation:g}"
            f"_seed{self.seed}"
        )


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[float]:
    """Vertices ``[x0, y0, x1, y1, ...]`` of a shape of circumradius ``r`` rotated by ``angle``."""
    if kind == "circle":
        pts = [(1.0, 2 * math.pi * k / 32) for k in range(32)]
    elif kind == "square":
        pts = [(1.0, math.pi / 4 + math.pi / 2 * k) for k in range(4)]
    elif kind == "triangle":
        pts = [(1.0, -math.pi / 2 + 2 * math.pi / 3 * k) for k in range(3)]
    elif kind == "star":
        pts = [(1.0 if k % 2 == 0 else 0.45, -math.pi / 2 + math.pi / 5 * k) for k in range(10)]
    elif kind == "semicircle":  # a half disc, its flat side through the centre
        pts = [(1.0, math.pi * k / 16) for k in range(17)]
    elif kind == "cross":
        a, b = 0.35, 1.0  # half arm width, arm length (in units of r / sqrt(a^2 + b^2))
        raw = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
               (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]  # fmt: skip
        scale = 1.0 / math.hypot(a, b)
        pts = [(math.hypot(x, y) * scale, math.atan2(y, x)) for x, y in raw]
    else:
        raise ConfigError(f"unknown shape '{kind}'; shapes: {', '.join(SHAPE_NAMES)}")
    out: list[float] = []
    for rho, theta in pts:
        out += [cx + r * rho * math.cos(theta + angle), cy + r * rho * math.sin(theta + angle)]
    return out


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured background: a colour gradient, stripes or blotches, plus pixel noise."""
    base = rng.uniform(40, 215, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    style = rng.integers(3)
    if style == 0:  # gradient
        direction = rng.uniform(-1, 1, size=3) * 60
        field = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None] * direction
    elif style == 1:  # stripes
        freq = rng.uniform(2, 8)
        theta = rng.uniform(0, math.pi)
        wave = np.sin(2 * math.pi * freq * (xx * math.cos(theta) + yy * math.sin(theta)))
        field = wave[..., None] * rng.uniform(5, 12)
    else:  # low-frequency blotches
        coarse = rng.normal(0, 25, size=(4, 4, 3)) + 128
        small = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8))
        field = np.asarray(small.resize((size, size), Image.BILINEAR), np.float32) - 128
    noise = rng.normal(0, rng.uniform(3, 8), size=(size, size, 3))
    return np.clip(base + field + noise, 0, 255).astype(np.uint8)


def _shape_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour far enough from the background's mean to be visible."""
    mean = background.reshape(-1, 3).mean(0)
    for _ in range(50):
        colour = rng.integers(0, 256, size=3)
        if np.abs(colour - mean).sum() > 150:
            break
    return tuple(int(c) for c in colour)  # type: ignore[return-value]


def _render(rng: np.random.Generator, spec: ShapesSpec) -> tuple[Image.Image, list[dict]]:
    """One image and its annotations (without ids): category, polygon, visible mask."""
    size = spec.image_size
    canvas = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(canvas)
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    objects: list[dict] = []
    for _ in range(n):
        for _attempt in range(20):
            kind = int(rng.integers(len(SHAPE_NAMES)))
            r = rng.uniform(spec.min_size, spec.max_size) * size
            cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
            angle = math.radians(rng.uniform(-spec.max_rotation, spec.max_rotation))
            poly = shape_polygon(SHAPE_NAMES[kind], cx, cy, r, angle)
            mask_img = Image.new("L", (size, size), 0)
            ImageDraw.Draw(mask_img).polygon(poly, fill=1)
            mask = np.asarray(mask_img, bool)
            # the new shape covers earlier ones: each earlier shape must keep half its area
            ok = mask.sum() >= 16 and all(
                (o["mask"] & ~mask).sum() >= 0.5 * o["full_area"] for o in objects
            )
            if ok:
                break
        else:
            continue  # no valid placement: fewer objects (min_objects still met below)
        for o in objects:
            o["mask"] = o["mask"] & ~mask
        draw.polygon(poly, fill=_shape_colour(rng, np.asarray(canvas)))
        objects.append({"kind": kind, "polygon": poly, "mask": mask, "full_area": int(mask.sum())})
    return canvas, objects


def _annotation(obj: dict, ann_id: int, image_id: int) -> dict:
    from pycocotools import mask as mask_utils

    mask = obj["mask"]
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    if int(mask.sum()) == obj["full_area"]:  # uncovered: the exact polygon
        poly = [round(v, 2) for v in obj["polygon"]]
        segmentation: list | dict = [poly]
        rle = mask_utils.frPyObjects([poly], mask.shape[0], mask.shape[1])
        area = float(mask_utils.area(mask_utils.merge(rle)))
        bx, by, bw, bh = (float(v) for v in mask_utils.toBbox(mask_utils.merge(rle)))
    else:  # partly covered: the visible region as compressed RLE
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        area = float(mask_utils.area(rle))
        rle["counts"] = rle["counts"].decode("ascii")
        segmentation = rle
        bx, by, bw, bh = float(x0), float(y0), float(x1 - x0), float(y1 - y0)
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": CATEGORY_IDS[obj["kind"]],
        "bbox": [round(bx, 2), round(by, 2), round(bw, 2), round(bh, 2)],
        "area": round(area, 2),
        "segmentation": segmentation,
        "iscrowd": 0,
    }


def _generate_split(spec: ShapesSpec, split: str, out: Path) -> None:
    (out / split).mkdir(parents=True)
    seq = np.random.SeedSequence([spec.seed, SPLITS.index(split)])
    images, annotations = [], []
    ann_id = 1
    split_offset = SPLITS.index(split) * 1_000_000  # image ids unique across splits
    for i, child in enumerate(seq.spawn(spec.count(split))):
        rng = np.random.default_rng(child)
        canvas, objects = _render(rng, spec)
        image_id = split_offset + i + 1
        file_name = f"{i:06d}.png"
        canvas.save(out / split / file_name, compress_level=1)
        size = spec.image_size
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for obj in objects:
            annotations.append(_annotation(obj, ann_id, image_id))
            ann_id += 1
    coco = {
        "info": {"description": "visionkit shapes", "generation": asdict(spec)},
        "images": images,
        "annotations": annotations,
        "categories": [
            {"id": cid, "name": name, "supercategory": "shape"}
            for cid, name in zip(CATEGORY_IDS, SHAPE_NAMES, strict=True)
        ],
    }
    (out / "annotations").mkdir(exist_ok=True)
    (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def check_root(root: Path) -> None:
    """No file stands where the dataset's folder ``root`` would be made (ConfigError naming
    data.root): the part of ``ensure_shapes``' check that ``runner.check_paths`` runs before the
    heavy imports; a folder that cannot be made for another reason is found by making it."""
    from visionkit.data.validation import blocking_file

    blocker = root if root.exists() and not root.is_dir() else blocking_file(root)
    if blocker is not None:
        raise _uncreatable(root, f"{blocker} is a file")


def _uncreatable(root: Path, why: str) -> ConfigError:
    return ConfigError(f"cannot create the generated dataset under data.root {root}: {why}")


def ensure_shapes(root: str | Path, spec: ShapesSpec) -> Path:
    """The dataset directory for ``spec`` under ``root``, generating it if absent (race-safe)."""
    root = Path(root)
    final = root / spec.key
    if (final / "annotations").is_dir():
        return final
    check_root(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key}.tmp-", dir=root))
    except OSError as exc:
        raise _uncreatable(root, exc.strerror or str(exc)) from None
    try:
        for split in SPLITS:
            _generate_split(spec, split, tmp)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "annotations").is_dir():  # not another process winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
