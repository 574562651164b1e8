"""Own data for every task, as a user runs it (subprocess), on small data written here in each real
format: COCO json + PNG/JPEG images (non-contiguous category and image ids, crowd regions, images
without objects, grayscale / RGBA / palette pictures), image + mask PNG folders with classes.yaml,
class-per-folder images, Pascal VOC (XML, split lists, `difficult` objects, SegmentationObject
PNGs), YOLO (polygon label lines, classes.txt); and scikit-learn's digits.

Each (task, format) pair trains once: with the README's own-data command exactly as written (its
placeholder root replaced by the data written here, the FAST overrides appended) where the README
has one, else with a small model. `test`, `predict` and `browse` then run on that run's checkpoint.
On COCO, the test mAP in results.json must equal pycocotools' COCOeval run here on the written
detections.json. Each training run also leaves the error analysis, learning curves and overlays a
user looks at; and `test` on 2 gloo processes gives the same detections as on one.

The tests are defined here once and run from one module per task (test_own_data_<task>.py), each
on the pairs of its task: a module's chains run in one worker (`--dist loadfile`), and the four
modules spread over the workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.conftest import FAST, command_args, readme_commands, run_cli

CATEGORIES = {12: "cow", 3: "ant", 7: "bee"}  # listed out of order, ids with gaps
COLOURS = {3: (220, 40, 40), 7: (40, 200, 40), 12: (40, 60, 230)}
MODES = ("RGB", "L", "RGBA", "P")
COUNTS = {"train": 8, "val": 4, "test": 7}  # 7 test images: 2 ranks pad one
PLACEHOLDERS = {"/data/mycoco": "coco", "/data/pets": "imagefolder", "/data/roads": "masks",
                "/data/VOCdevkit/VOC2007": "voc", "/data/myyolo": "yolo"}  # fmt: skip
PAIRS = [
    ("classification", "coco"),
    ("classification", "imagefolder"),
    ("classification", "digits"),
    ("semantic_segmentation", "coco"),
    ("semantic_segmentation", "masks"),
    ("detection", "coco"),
    ("instance_segmentation", "coco"),
    ("detection", "voc"),
    ("instance_segmentation", "voc"),
    ("instance_segmentation", "yolo"),
]
# a pair the README has no command for trains with this (small images and model)
SMALL = {
    "classification": ["data.image_size=48", "data.batch_size=4"],
    "semantic_segmentation": ["data.image_size=48", "data.batch_size=4"],
}
RESULT_KEYS = {
    "classification": ["val/acc", "test/acc"],
    "semantic_segmentation": ["val/mIoU", "test/mIoU", "test/per_class_iou"],
    "detection": ["val/map", "test/map", "test/map_50", "test/detections"],
    "instance_segmentation": ["val/segm_map", "test/segm_map", "test/bbox_map", "test/detections"],
}
DETECTION = ("detection", "instance_segmentation")
# `test` and `predict` read only the checkpoint (and, for test, the split's files, as training's
# own test already does for every pair): one pair per task; `browse` reads the training data: one
# pair per format. Every pair trains (with its test after fit).
ONE_PER_TASK = [("classification", "imagefolder"), ("semantic_segmentation", "masks"),
                ("detection", "coco"), ("instance_segmentation", "coco")]  # fmt: skip
ONE_PER_FORMAT = [("classification", "imagefolder"), ("classification", "digits"),
                  ("semantic_segmentation", "masks"), ("instance_segmentation", "coco")]  # fmt: skip
STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
         "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")  # fmt: skip
TIMEOUT = 600
# after test: error analysis in results.json and its pictures (visionkit.evaluation.error_analysis)
ANALYSIS = {
    "semantic_segmentation": (
        ["test/pixel_confusion"],
        ["iou_per_class_test.png", "pixel_confusion_test.png"],
    ),
    "detection": (
        ["test/per_class_ap", "test/confusion"],
        ["pr_curves_test.png", "detection_confusion_test.png"],
    ),
    "instance_segmentation": (
        ["test/per_class_ap", "test/confusion"],
        ["pr_curves_bbox_test.png", "pr_curves_segm_test.png", "detection_confusion_test.png"],
    ),
}
DDP_TEST = [("detection", "coco")]  # `test` on 2 gloo processes against `test` on one
MONITORED = {"classification": "acc", "semantic_segmentation": "mIoU", "detection": "map_50",
             "instance_segmentation": "segm_map_50"}  # fmt: skip


# -- the data, in each real format ---------------------------------------------------------------
Obj = tuple[int, int, int, int, int, int]  # category id, x, y, w, h, iscrowd


def scene(rng: np.random.Generator, index: int, split: str) -> tuple[Image.Image, list[Obj]]:
    """A picture of coloured boxes on noise, in mode MODES[index % 4]; outside train, image 1 has
    no objects and image 2 a crowd region along its bottom."""
    w, h = (int(v) for v in rng.integers(48, 65, 2))
    arr = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    objects: list[Obj] = []
    count = 0 if split != "train" and index == 1 else int(rng.integers(1, 3))
    for k in range(count):
        cat = list(COLOURS)[(index + k) % 3]
        bw, bh = (int(v) for v in rng.integers(14, 26, 2))
        x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh - 10))
        arr[y : y + bh, x : x + bw] = COLOURS[cat]
        objects.append((cat, x, y, bw, bh, 0))
    if split == "train" or index == 2:
        arr[h - 8 :, :] = COLOURS[7]
        objects.append((7, 0, h - 8, w, 8, 1))
    image = Image.fromarray(arr)
    mode = MODES[index % len(MODES)]
    return (image.convert(mode, palette=Image.ADAPTIVE) if mode == "P" else image.convert(mode)), objects  # fmt: skip


def save(image: Image.Image, folder: Path, stem: str, jpeg: bool) -> str:
    """PNG, or JPEG where the mode allows and ``jpeg``; returns the file name."""
    name = f"{stem}.jpg" if jpeg and image.mode in ("RGB", "L") else f"{stem}.png"
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / name)
    return name


def write_coco(root: Path) -> Path:
    """``root/{split}/*`` + ``root/annotations/instances_{split}.json`` (crowd regions as RLE)."""
    from pycocotools import mask as mask_utils

    cats = [{"id": i, "name": n} for i, n in CATEGORIES.items()]
    for s, (split, n) in enumerate(COUNTS.items()):
        rng = np.random.default_rng(10 + s)
        images, anns = [], []
        for i in range(n):
            image, objects = scene(rng, i, split)
            image_id = 1000 * (s + 1) + 7 * i + 3
            name = save(image, root / split, f"{split}{i}", jpeg=i % 2 == 0)
            images.append({"id": image_id, "file_name": name, "width": image.width, "height": image.height})  # fmt: skip
            for cat, x, y, bw, bh, crowd in objects:
                ann = {"id": 50 + 3 * len(anns), "image_id": image_id, "category_id": cat,
                       "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": crowd}  # fmt: skip
                if crowd:
                    m = np.zeros((image.height, image.width), np.uint8)
                    m[y : y + bh, x : x + bw] = 1
                    rle = mask_utils.encode(np.asfortranarray(m))
                    ann["segmentation"] = {**rle, "counts": rle["counts"].decode("ascii")}
                else:
                    ann["segmentation"] = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
                anns.append(ann)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def write_masks(root: Path) -> Path:
    """``root/images/{split}/*``, ``root/masks/{split}/*.png`` (pixel = category id, crowd = 255)."""
    (root / "classes.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "classes.yaml").write_text("0: background\n" + "".join(f"{i}: {n}\n" for i, n in sorted(CATEGORIES.items())))  # fmt: skip
    for s, (split, n) in enumerate(COUNTS.items()):
        rng = np.random.default_rng(20 + s)
        for i in range(n):
            image, objects = scene(rng, i, split)
            name = save(image, root / "images" / split, f"{split}{i}", jpeg=i % 2 == 0)
            mask = np.zeros((image.height, image.width), np.uint8)
            for cat, x, y, bw, bh, crowd in objects:
                mask[y : y + bh, x : x + bw] = 255 if crowd else cat
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / "masks" / split / f"{Path(name).stem}.png")
    return root


def write_imagefolder(root: Path) -> Path:
    """``root/{split}/<class name>/*``: one box of the class's colour per picture."""
    for s, split in enumerate(COUNTS):
        rng = np.random.default_rng(30 + s)
        for c, (cat, name) in enumerate(sorted(CATEGORIES.items())):
            for i in range(3 if split == "train" else 2):
                w, h = (int(v) for v in rng.integers(40, 72, 2))
                arr = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
                arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = COLOURS[cat]
                mode = MODES[(c + i) % len(MODES)]
                image = Image.fromarray(arr)
                image = image.convert(mode, palette=Image.ADAPTIVE) if mode == "P" else image.convert(mode)  # fmt: skip
                save(image, root / split / name, f"{i}", jpeg=i % 2 == 0)
    return root


# pictures for `predict`: stem -> (mode, width, height)
INPUTS = {"gray": ("L", 37, 53), "rgba": ("RGBA", 70, 31), "palette": ("P", 50, 50), "photo": ("RGB", 64, 48)}  # fmt: skip


def write_inputs(folder: Path) -> Path:
    """INPUTS as files (the RGB one a JPEG)."""
    rng = np.random.default_rng(40)
    for stem, (mode, w, h) in INPUTS.items():
        image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        image = image.convert(mode, palette=Image.ADAPTIVE) if mode == "P" else image.convert(mode)
        save(image, folder, stem, jpeg=mode == "RGB")
    return folder


def write_voc(root: Path) -> Path:
    """``root/Annotations/*.xml`` (crowd regions as `difficult` objects), ``root/JPEGImages/*``,
    ``root/SegmentationObject/*.png`` (pixel k = the XML's k-th object) and both split lists
    (ImageSets/Main and ImageSets/Segmentation)."""
    for s, (split, n) in enumerate(COUNTS.items()):
        rng = np.random.default_rng(50 + s)
        stems = []
        for i in range(n):
            image, objects = scene(rng, i, split)
            name = save(image, root / "JPEGImages", f"{split}{i}", jpeg=i % 2 == 0)
            stems.append(Path(name).stem)
            instances = np.zeros((image.height, image.width), np.uint8)
            xml = []
            for k, (cat, x, y, bw, bh, crowd) in enumerate(objects, start=1):
                box = f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + bw}</xmax><ymax>{y + bh}</ymax>"  # fmt: skip
                xml.append(f"<object><name>{CATEGORIES[cat]}</name><difficult>{crowd}</difficult><bndbox>{box}</bndbox></object>")  # fmt: skip
                instances[y : y + bh, x : x + bw] = k
            size = f"<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth></size>"  # fmt: skip
            (root / "Annotations").mkdir(parents=True, exist_ok=True)
            (root / "Annotations" / f"{stems[-1]}.xml").write_text(f"<annotation><filename>{name}</filename>{size}{''.join(xml)}</annotation>")  # fmt: skip
            save(Image.fromarray(instances), root / "SegmentationObject", stems[-1], jpeg=False)
        for kind in ("Main", "Segmentation"):
            (root / "ImageSets" / kind).mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / kind / f"{split}.txt").write_text("\n".join(stems) + "\n")
    return root


def write_yolo(root: Path) -> Path:
    """``root/images/{split}/*``, ``root/labels/{split}/*.txt`` (a polygon line per object, the
    crowd region too: YOLO has none), ``root/classes.txt``."""
    index = {cat: k for k, cat in enumerate(sorted(CATEGORIES))}
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{CATEGORIES[c]}\n" for c in sorted(CATEGORIES)))
    for s, (split, n) in enumerate(COUNTS.items()):
        rng = np.random.default_rng(60 + s)
        for i in range(n):
            image, objects = scene(rng, i, split)
            name = save(image, root / "images" / split, f"{split}{i}", jpeg=i % 2 == 0)
            lines = []
            for cat, x, y, bw, bh, _ in objects:
                corners = [(x, y), (x + bw, y), (x + bw, y + bh), (x, y + bh)]
                xy = " ".join(f"{px / image.width:.6f} {py / image.height:.6f}" for px, py in corners)  # fmt: skip
                lines.append(f"{index[cat]} {xy}\n")
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{Path(name).stem}.txt").write_text("".join(lines))
    return root


WRITERS = {"coco": write_coco, "masks": write_masks, "imagefolder": write_imagefolder, "voc": write_voc, "yolo": write_yolo}  # fmt: skip


# -- the README's own-data commands --------------------------------------------------------------
def pair_of(command: str) -> tuple[str, str]:
    """(task, data) a command trains, from its ``task=`` / ``data=`` overrides (else defaults)."""
    words = dict(w.split("=", 1) for w in shlex.split(command) if "=" in w)
    return words.get("task", "classification"), words.get("data", "shapes")


# its training commands (the `convert` ones run in tests/commands/test_convert.py)
README = {pair_of(c): c for c in readme_commands("Your own data") if c.split()[3] != "convert"}


# -- one trained run per pair, then the other commands on its checkpoint ------------------------
@dataclass
class Chain:
    """The commands of one (task, format) pair, each run once (module scope) and remembered."""

    task: str
    fmt: str
    base: Path
    data_dir: Path
    roots: dict[str, Path]
    done: dict[str, Any] = field(default_factory=dict)

    def run(self, step: str, *args: str, env: dict | None = None) -> Path:
        """``python -m visionkit ARGS`` in its own folder ``base/step``, once (its stderr kept in
        ``stderr.txt`` there): a failure is remembered and raised again to the later tests that
        need the step."""
        if isinstance(self.done.get(step), AssertionError):
            raise self.done[step]
        cwd = self.base / step
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            proc = run_cli(*args, cwd=cwd, data_dir=self.data_dir, timeout=TIMEOUT, check=True, env=env)  # fmt: skip
            (cwd / "stderr.txt").write_text(proc.stderr)
        except AssertionError as exc:
            self.done[step] = exc
            raise
        return cwd

    def root(self) -> Path | None:
        if self.fmt not in WRITERS:
            return None
        if self.fmt not in self.roots:
            self.roots[self.fmt] = WRITERS[self.fmt](self.base.parent / "data" / self.fmt)
        return self.roots[self.fmt]

    def train_args(self) -> list[str]:
        """The README's command (placeholder root replaced) or a small one, + FAST."""
        root = self.root()
        if (self.task, self.fmt) in README:
            placeholders = {p: str(root) for p, fmt in PLACEHOLDERS.items() if fmt == self.fmt}
            return [*command_args(README[(self.task, self.fmt)], placeholders), *FAST]
        return [f"task={self.task}", f"data={self.fmt}", f"data.root={root}", *SMALL[self.task],
                "model.backbone.channels=[8,8,16,16]", *FAST]  # fmt: skip

    def data_args(self) -> list[str]:
        """The data overrides of the training command (what the other commands are given)."""
        return [w for w in self.train_args() if w.startswith("data")]

    def train(self) -> Path:
        """The run directory of the training command."""
        if not isinstance(self.done.get("train"), Path):
            cwd = self.run("train", *self.train_args())
            runs = sorted(cwd.glob("outputs/*/*/results.json"))
            assert len(runs) == 1, runs
            self.done["train"] = runs[0].parent
        return self.done["train"]

    def ckpt(self) -> Path:
        return self.train() / "checkpoints" / "best.ckpt"

    def step(self, name: str, *args: str, env: dict | None = None) -> Path:
        if not isinstance(self.done.get(name), Path):
            self.done[name] = self.run(name, *args, "hydra.run.dir=out", env=env) / "out"
        return self.done[name]

    def test(self) -> Path:
        # every test image, so that the numbers can be checked against pycocotools; one image per
        # batch where the run is also the one-process reference of the DDP test (an image's
        # detections then cannot depend on the others padded beside it; training's own test
        # after fit runs the batched test of every pair)
        one = ["data.batch_size=1"] if (self.task, self.fmt) in DDP_TEST else []
        return self.step("test", "test", f"ckpt_path={self.ckpt()}", *self.data_args(), *FAST, "trainer.limit_test_batches=1.0", *one)  # fmt: skip

    def predict(self) -> Path:
        return self.step("predict", "predict", f"ckpt_path={self.ckpt()}", f"input={self.inputs()}", *self.data_args(), "trainer.accelerator=cpu")  # fmt: skip

    def browse(self) -> Path:
        return self.step("browse", "browse", f"task={self.task}", *self.data_args(), "data.num_workers=0", "split=train", "n=4")  # fmt: skip

    def inputs(self) -> Path:
        folder = self.base.parent / "inputs"
        if not folder.is_dir():
            write_inputs(folder)
        return folder


@pytest.fixture(scope="module")
def chains(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[tuple[str, str], Chain]:  # fmt: skip
    base = tmp_path_factory.mktemp("own_data")
    roots: dict[str, Path] = {}
    return {(t, f): Chain(t, f, base / f"{t}-{f}", data_dir, roots) for t, f in PAIRS}


def pairs(tasks: tuple[str, ...] | None = None, among: list[tuple[str, str]] = PAIRS) -> list[Any]:
    """PAIRS (or those ``among``) of ``tasks`` as params."""
    return [
        pytest.param((t, f), id=f"{t}-{f}")
        for t, f in PAIRS
        if (tasks is None or t in tasks) and (t, f) in among
    ]


def among(chosen: list[tuple[str, str]]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Marks a test to run on the ``chosen`` pairs only (all PAIRS without the mark)."""

    def mark(test: Callable[..., None]) -> Callable[..., None]:
        test.among = chosen  # type: ignore[attr-defined]
        return test

    return mark


def parametrize_pairs(metafunc: pytest.Metafunc, tasks: tuple[str, ...]) -> None:
    """A task module's ``pytest_generate_tests``: each test's pairs of ``tasks``."""
    if "pair" in metafunc.fixturenames:
        chosen = getattr(metafunc.function, "among", PAIRS)
        metafunc.parametrize("pair", pairs(tasks, chosen))


def label_ids(fmt: str) -> set[int]:
    """The category ids a format's predictions must carry."""
    return {"coco": set(CATEGORIES), "masks": {0, *CATEGORIES}, "imagefolder": {0, 1, 2}}.get(fmt, set(range(10)))  # fmt: skip


def assert_in_original_pixels(dets: list[dict], sizes: dict[int, tuple[int, int]]) -> None:
    """Boxes (and RLE masks) of each detection lie in its image's own pixels, whatever size the
    detector resized it to (data.image_size)."""
    assert {d["image_id"] for d in dets} <= set(sizes)
    for d in dets:
        w, h = sizes[d["image_id"]]
        x, y, bw, bh = d["bbox"]
        assert min(x, y) >= -0.01 and x + bw <= w + 0.01 and y + bh <= h + 0.01, (d, w, h)
        if "segmentation" in d:
            assert d["segmentation"]["size"] == [h, w]


# -- the tests ---------------------------------------------------------------------------------
def test_readme_own_data_section_covers_every_format() -> None:
    """The README's commands, read here and run below, are one per pair (instance seg. included)."""
    assert set(README) == {
        ("detection", "coco"),
        ("instance_segmentation", "coco"),
        ("classification", "imagefolder"),
        ("semantic_segmentation", "masks"),
        ("classification", "digits"),
        ("detection", "voc"),
        ("instance_segmentation", "voc"),
        ("instance_segmentation", "yolo"),
    }
    assert set(README) <= set(PAIRS)
    for command in README.values():
        used = [p for p in PLACEHOLDERS if p in command]
        assert len(used) == (0 if "data=digits" in command else 1), command


def test_train(chains: dict, pair: tuple[str, str]) -> None:
    """Train (the README's command where it has one): results.json, best and last checkpoints."""
    chain = chains[pair]
    run = chain.train()
    results = json.loads((run / "results.json").read_text())
    for key in RESULT_KEYS[chain.task]:
        assert key in results, (key, sorted(results))
    assert Path(results["best_checkpoint"]) == chain.ckpt() and chain.ckpt().is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    config = (run / "config.yaml").read_text()
    assert f"name: {chain.fmt}" in config and f"name: {chain.task}" in config
    # what a user looks at after training: learning curves with the task's own training metric
    # and a diagnosis
    assert (run / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert results["learning_curves"]["train_metric"][0] is not None
    assert results["diagnosis"]["metric"] == MONITORED[chain.task]
    if chain.task in ANALYSIS:  # the others: overlays of validation images, error analysis
        overlays = sorted((run / "overlays").glob("epoch000_*.png"))
        assert overlays and overlays[0].read_bytes()[:4] == b"\x89PNG"
        assert_error_analysis(run, results, chain.task)
    else:
        assert (run / "confusion_matrix_test.png").read_bytes()[:4] == b"\x89PNG"


def assert_error_analysis(run: Path, results: dict, task: str) -> None:
    """The error analysis's pictures exist and its tables are the terms of the test metrics: the
    pixel confusion gives the per-class IoUs; the per-class APs average to the test mAP."""
    keys, pictures = ANALYSIS[task]
    assert set(keys) <= set(results), sorted(results)
    for name in pictures:
        assert (run / name).read_bytes()[:4] == b"\x89PNG", name
    assert {str(run / name) for name in pictures} <= set(results["figures"])
    if task == "semantic_segmentation":
        pixels = results["test/pixel_confusion"]
        matrix = np.array(pixels["matrix"], dtype=float)
        union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
        iou = {n: (None if u == 0 else float(tp / u)) for n, tp, u in zip(pixels["labels"], np.diag(matrix), union, strict=True)}  # fmt: skip
        assert iou == pytest.approx(results["test/per_class_iou"])
        return
    table = results["test/per_class_ap"] if task == "detection" else results["test/per_class_ap"]["bbox"]  # fmt: skip
    aps = [row["ap"] for row in table.values() if row["ap"] is not None]
    assert np.mean(aps) == pytest.approx(results["test/map" if task == "detection" else "test/bbox_map"], abs=1e-6)  # fmt: skip
    assert set(table) == set(results["test/confusion"]["labels"][:-1])


@among(ONE_PER_TASK)
def test_test(chains: dict, pair: tuple[str, str]) -> None:
    """`test ckpt_path=...` on the same data: results.json with the task's test keys."""
    chain = chains[pair]
    out = chain.test()
    results = json.loads((out / "results.json").read_text())
    assert results["checkpoint"] == str(chain.ckpt())
    for key in [k for k in RESULT_KEYS[chain.task] if k.startswith("test/")]:
        assert key in results, (key, sorted(results))
    if chain.task in DETECTION:
        gt = json.loads((chain.root() / "annotations" / "instances_test.json").read_text())
        dets = json.loads((out / "detections.json").read_text())
        assert Path(results["test/detections"]) == out / "detections.json"
        assert results["test/evaluated_all_images"] is True
        assert dets and {d["category_id"] for d in dets} <= set(CATEGORIES)
        sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
        assert_in_original_pixels(dets, sizes)


def coco_stats(gt_file: Path, dets: list[dict], iou_type: str) -> list[float]:
    """pycocotools' COCOeval summary (the oracle) of ``dets`` against ``gt_file``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(gt_file))
        ev = COCOeval(coco, coco.loadRes(dets), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


def with_ground_truth_hits(dets: list[dict], gt: dict, task: str) -> list[dict]:
    """``dets`` + a detection on every other non-crowd object (its box, its polygon as RLE): an
    evaluation that finds some objects, whatever a 2-batch model learnt."""
    from pycocotools import mask as mask_utils

    sizes = {im["id"]: (im["height"], im["width"]) for im in gt["images"]}
    hits = []
    for ann in [a for a in gt["annotations"] if not a["iscrowd"]][::2]:
        hit = {"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": ann["bbox"], "score": 0.99}  # fmt: skip
        if task == "instance_segmentation":
            h, w = sizes[ann["image_id"]]
            rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))
            hit["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
        hits.append(hit)
    return [*dets, *hits]


@among([(t, "coco") for t in DETECTION])
def test_coco_map_equals_pycocotools_on_detections_json(chains: dict, pair: tuple[str, str]) -> None:  # fmt: skip
    """The test mAP in results.json = pycocotools' COCOeval on (instances_test.json, detections.json),
    on data with non-contiguous ids, crowd regions, an empty image and L / RGBA / P pictures; and
    visionkit's evaluation (what `test` runs) = COCOeval on the same data where objects are found."""
    from visionkit.evaluation.coco_results import evaluate

    chain = chains[pair]
    out = chain.test()
    results = json.loads((out / "results.json").read_text())
    gt_file = chain.root() / "annotations" / "instances_test.json"
    dets = json.loads((out / "detections.json").read_text())
    iou_types = ["bbox", "segm"] if chain.task == "instance_segmentation" else ["bbox"]
    found = with_ground_truth_hits(dets, json.loads(gt_file.read_text()), chain.task)
    ours = evaluate(gt_file, found, iou_types, results["test/coco_backend"])
    for iou_type in iou_types:
        prefix = f"{iou_type}_" if len(iou_types) > 1 else ""
        got = [results[f"test/{prefix}{name}"] for name in STATS]
        assert got == pytest.approx(coco_stats(gt_file, dets, iou_type), abs=1e-4), iou_type
        oracle = coco_stats(gt_file, found, iou_type)
        assert max(oracle) > 0.1, oracle  # not an agreement of zeros
        assert [ours[f"{prefix}{name}"] for name in STATS] == pytest.approx(oracle, abs=1e-4)


@among(DDP_TEST)
def test_ddp_test_gathers_every_image_once(chains: dict, pair: tuple[str, str]) -> None:
    """`test` on 2 gloo processes: detections of both ranks in one file, the sampler's padding
    (7 images on 2 ranks) removed, and the same detections and mAP as on one process (the pair's
    `test` run, also one image per batch: see Chain.test). Warnings shown (the tests hide them):
    the COCO numbers, equal on every rank, are logged without Lightning's sync_dist advice."""
    chain = chains[pair]
    args = ["test", f"ckpt_path={chain.ckpt()}", *chain.data_args(), *FAST, "trainer.limit_test_batches=1.0", "data.batch_size=1"]  # fmt: skip
    outputs = []
    ddp_run = chain.step("test_ddp", *args, "trainer.devices=2", "trainer.strategy=ddp", env={"PYTHONWARNINGS": "default"})  # fmt: skip
    assert "sync_dist" not in (ddp_run.parent / "stderr.txt").read_text()
    for out in (chain.test(), ddp_run):
        outputs.append((json.loads((out / "results.json").read_text()), json.loads((out / "detections.json").read_text())))  # fmt: skip
    (single, single_dets), (ddp, ddp_dets) = outputs
    per_image = [sorted(Counter(d["image_id"] for d in dets).items()) for dets in (single_dets, ddp_dets)]  # fmt: skip
    assert per_image[0] == per_image[1] and single_dets
    assert len(json.loads(Path(ddp["test/ground_truth"]).read_text())["images"]) == COUNTS["test"]
    assert ddp["test/map"] == pytest.approx(single["test/map"], abs=1e-4)


@among(ONE_PER_TASK)
def test_predict(chains: dict, pair: tuple[str, str]) -> None:
    """`predict ckpt_path=... input=<folder>`: one picture per input at its size, and the task's
    files in the dataset's ids."""
    chain = chains[pair]
    out = chain.predict()
    sizes = {stem: (w, h) for stem, (_, w, h) in INPUTS.items()}
    for stem, size in sizes.items():
        with Image.open(out / "predictions" / f"{stem}.png") as picture:
            assert (picture.mode, picture.size) == ("RGB", size), stem
    if chain.task in DETECTION:
        dets = json.loads((out / "detections.json").read_text())
        assert {d["category_id"] for d in dets} <= set(CATEGORIES)
        images = json.loads((out / "images.json").read_text())
        assert sorted(Path(im["file_name"]).stem for im in images) == sorted(sizes)
        assert_in_original_pixels(dets, {im["id"]: (im["width"], im["height"]) for im in images})
    elif chain.task == "semantic_segmentation":
        for stem, size in sizes.items():
            with Image.open(out / "labels" / f"{stem}.png") as labels:
                assert labels.size == size
    else:
        predictions = json.loads((out / "predictions.json").read_text())
        assert len(predictions) == len(sizes)
        assert {p["category_id"] for p in predictions} <= label_ids(chain.fmt)


@among(ONE_PER_FORMAT)
def test_browse(chains: dict, pair: tuple[str, str]) -> None:
    """`browse`: a PNG grid of augmented training samples of the user's data."""
    out = chains[pair].browse()
    picture = out / "browse_train.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(picture) as grid:
        assert grid.width >= 2 * 128 and grid.height >= 2 * 128


def test_unknown_data_key_is_one_error_line(cli: Any, tmp_path: Path) -> None:
    """A key the format does not take ends with one line naming it, the format and what it takes."""
    proc = cli("task=detection", "data=coco", f"data.root={tmp_path}", "+data.max_objects=3", *FAST)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: data format 'coco' takes no key(s) data.max_objects; it accepts: "
    )
    assert "annotations, batch_size," in last
