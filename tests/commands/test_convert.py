"""``python -m visionkit convert``: COCO <-> YOLO keeps every box and polygon; VOC -> COCO; bad
input is one error line naming the file. The README's three convert commands run as written (their
placeholder roots replaced by data written here)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import command_args, readme_commands

# the README's convert commands by source format (voc, yolo, coco)
CONVERT = {c.split()[4]: c for c in readme_commands("Your own data") if c.startswith("python -m visionkit convert ")}  # fmt: skip
W, H = 40, 30
VOC_OBJECT = "<object><name>{}</name><difficult>{}</difficult><bndbox><xmin>3</xmin><ymin>4</ymin><xmax>12</xmax><ymax>20</ymax></bndbox></object>"  # fmt: skip


def voc_dataset(root: Path, objects: str, split: str | None = None) -> Path:
    """One VOC image with ``objects`` (XML) in Annotations/, JPEGImages/, listed in
    ImageSets/Main/{split}.txt (no split: no list, all files)."""
    (root / "JPEGImages").mkdir(parents=True)
    if split:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("b\n")
    (root / "Annotations").mkdir()
    Image.new("RGB", (W, H)).save(root / "JPEGImages" / "b.png")
    size = f"<size><width>{W}</width><height>{H}</height></size>"
    (root / "Annotations" / "b.xml").write_text(f"<annotation><filename>b.png</filename>{size}{objects}</annotation>")  # fmt: skip
    return root


def coco_dataset(root: Path, folder: str = "images", file: str = "instances.json") -> Path:
    """COCO with non-contiguous category ids, polygons and boxes, two images: ``root/file``,
    pictures in ``root/folder``."""
    rng = np.random.default_rng(0)
    (root / folder).mkdir(parents=True)
    images, anns = [], []
    polys = {1: [[2.0, 3.0, 20.5, 3.0, 20.5, 15.25, 2.0, 15.25]], 2: [[10.0, 10.0, 30.0, 12.0, 20.0, 28.0]]}  # fmt: skip
    for image_id in (1, 2):
        name = f"im{image_id}.png"
        Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(root / folder / name)
        images.append({"id": image_id, "file_name": name, "width": W, "height": H})
        for cat, poly in polys.items():
            xs, ys = poly[0][0::2], poly[0][1::2]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 3 + 4 * (cat - 1), "bbox": box, "area": box[2] * box[3], "iscrowd": 0, "segmentation": poly})  # fmt: skip
    cats = [{"id": 3, "name": "circle"}, {"id": 7, "name": "triangle"}]
    path = root / file
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def by_image(data: dict) -> dict:
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    out: dict = {}
    for a in data["annotations"]:
        out.setdefault(Path(files[a["image_id"]]).name, []).append((names[a["category_id"]], a["bbox"], a.get("segmentation")))  # fmt: skip
    return {k: sorted(v, key=lambda t: t[0]) for k, v in out.items()}


def test_readme_convert_commands_coco_yolo_round_trip_and_voc(cli, tmp_path: Path) -> None:
    """The README's commands as written: COCO -> YOLO (train.json and imgs/ in the working
    directory) -> COCO keeps every box and polygon; VOC -> COCO (--split val)."""
    ann = coco_dataset(tmp_path, folder="imgs", file="train.json")
    original = by_image(json.loads(ann.read_text()))
    done = cli(*command_args(CONVERT["coco"]), check=True)
    assert "2 images, 4 annotations" in done.stdout
    assert "━" not in done.stderr  # no progress bar: stderr is not a terminal
    yolo = tmp_path / "out"
    (yolo / "images").mkdir()
    (tmp_path / "imgs").rename(yolo / "images" / "train")
    ann.unlink()  # the next command writes it again, from the YOLO labels
    cli(*command_args(CONVERT["yolo"], {"/data/myyolo": str(yolo)}), check=True)  # -> train.json
    round_trip = by_image(json.loads(ann.read_text()))
    assert original.keys() == round_trip.keys()
    for name, objects in original.items():
        assert len(round_trip[name]) == len(objects)
        for (c0, b0, s0), (c1, b1, s1) in zip(objects, round_trip[name], strict=True):
            assert c0 == c1
            np.testing.assert_allclose(b1, b0, atol=1e-6)
            np.testing.assert_allclose(s1, s0, atol=1e-6)
    # VOC -> COCO; a bad object is one error line naming file and object
    voc = voc_dataset(tmp_path / "voc", VOC_OBJECT.format("dog", 0) + VOC_OBJECT.format("cat", 1), split="val")  # fmt: skip
    cli(*command_args(CONVERT["voc"], {"/data/VOCdevkit/VOC2007": str(voc)}), check=True)
    data = json.loads((tmp_path / "val.json").read_text())
    assert [a["bbox"] for a in data["annotations"]] == [
        [2.0, 3.0, 10.0, 17.0]
    ] * 2  # xmin-1, ymin-1, w, h
    assert [a["iscrowd"] for a in data["annotations"]] == [0, 1]  # difficult -> ignored region
    assert sorted(c["name"] for c in data["categories"]) == ["cat", "dog"]
    bad = voc_dataset(tmp_path / "bad", VOC_OBJECT.format("dog", 0) + "<object><name>cat</name></object>")  # fmt: skip
    failed = cli("convert", "voc", "coco", "--root", str(bad), "--output", str(tmp_path / "x.json"))
    assert failed.returncode == 2
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "b.xml: object 2" in lines[0]


def on_a_terminal(*args: str, cwd: Path, data_dir: Path) -> str:
    """``python -m visionkit ARGS`` with stderr on a pseudo-terminal; what it wrote there."""
    import os
    import pty
    import subprocess
    import sys

    main, child = pty.openpty()
    env = {**os.environ, "VISIONKIT_DATA_DIR": str(data_dir), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "visionkit", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=child, timeout=300)  # fmt: skip
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the terminal's other end is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    assert proc.returncode == 0, proc.stdout
    return b"".join(chunks).decode(errors="replace")


def test_progress_bars_on_a_terminal_unless_quiet(tmp_path: Path, data_dir: Path) -> None:
    voc = voc_dataset(tmp_path / "voc", VOC_OBJECT.format("dog", 0))
    argv = ["convert", "voc", "coco", "--root", str(voc), "--output", str(tmp_path / "voc.json")]
    shown = on_a_terminal(*argv, cwd=tmp_path, data_dir=data_dir)
    assert "reading VOC annotations" in shown and "checking images (header)" in shown
    assert "100%" in shown
    assert on_a_terminal(*argv, "--quiet", cwd=tmp_path, data_dir=data_dir) == ""
