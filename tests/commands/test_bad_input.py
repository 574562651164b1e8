"""Bad input and configuration mistakes as a user meets them (subprocess): ONE ``error:`` line
naming the file / annotation id / config key, exit code 2; ``data.on_bad=skip`` completes and
results.json counts what was skipped. The many single cases are tested in-process in tests/data/
and tests/test_runner.py (each CLI run costs seconds); here is one representative of each path
(setup check per format, worker, config check per kind, skip mode)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CLI, FAST, IMPORT_TIMES, split_imports
from tests.data.conftest import write_coco, write_imagefolder, write_masks

COCO = ["data=coco", "data.image_size=32", "data.batch_size=2", *FAST]


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    """The single non-empty stderr line, which starts with ``error:`` (exit code 2)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def _truncated_jpeg(path: Path) -> None:
    """A JPEG cut inside its pixel data: the header parses, decoding fails."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * 0.7)])


def _edit(root: Path, split: str, change) -> Path:
    ann = root / "annotations" / f"instances_{split}.json"
    data = json.loads(ann.read_text())
    change(data)
    ann.write_text(json.dumps(data))
    return ann


def _add_truncated_image(root: Path, data: dict) -> None:
    _truncated_jpeg(root / "train" / "t.jpg")
    data["images"].append({"id": 104, "file_name": "t.jpg", "width": 32, "height": 32})
    data["annotations"].append({"id": 6, "image_id": 104, "category_id": 5, "bbox": [1, 1, 8, 8],
                                "area": 64.0, "iscrowd": 0})  # fmt: skip


def test_bad_coco_is_one_line(cli: CLI, tmp_path: Path) -> None:
    """A truncated image: the line names the annotation file, the image id and the file (the other
    COCO cases, e.g. duplicate image ids or empty categories, in tests/data/test_coco.py)."""
    root = write_coco(tmp_path / "coco")
    _edit(root, "train", lambda d: _add_truncated_image(root, d))
    line = one_error_line(cli(*COCO, f"data.root={root}"))
    expected = (r"instances_train\.json: image id 104: unreadable or truncated image "
                r".*/train/t\.jpg: image file is truncated")  # fmt: skip
    assert __import__("re").search(expected, line), line


MASKS = ["task=semantic_segmentation", "data=masks", "data.image_size=24", "data.batch_size=2", *FAST]  # fmt: skip


def test_bad_masks_are_one_line(cli: CLI, tmp_path: Path) -> None:
    """Mask data: classes outside the class file (a mask of another size, a missing mask and the
    other mask cases: tests/data/test_formats.py, through the same datamodule setup)."""
    root = write_masks(tmp_path / "masks", palette=False)
    mask = np.zeros((24, 24), np.uint8)
    mask[3:9, 3:9] = 5
    Image.fromarray(mask).save(root / "masks" / "train" / "1.png")
    line = one_error_line(cli(*MASKS, f"data.root={root}"))
    expected = r"error: mask .*/masks/train/1\.png has class values \[5\] not in the class file"
    assert __import__("re").search(expected, line), line


def test_error_in_a_loader_worker_is_the_same_one_line(cli: CLI, tmp_path: Path) -> None:
    """verify_images=header misses a truncated JPEG whose header parses; the worker finds it."""
    root = write_coco(tmp_path / "coco")
    _edit(root, "train", lambda d: _add_truncated_image(root, d))
    proc = cli(*COCO, f"data.root={root}", "data.verify_images=header", "data.num_workers=1",
               "data.batch_size=8")  # fmt: skip
    line = one_error_line(proc)
    assert "Traceback" not in line and "DataLoader worker" not in line
    assert "/train/t.jpg: image file is truncated" in line and "data.verify_images=full" in line


def test_empty_class_folder_is_one_line(cli: CLI, tmp_path: Path) -> None:
    root = write_imagefolder(tmp_path / "folder")
    (root / "train" / "dog").mkdir()
    line = one_error_line(cli("data=imagefolder", "data.image_size=16", *FAST, f"data.root={root}"))
    assert f"class folder {root / 'train' / 'dog'} has no images" in line


def test_skip_mode_completes_warns_once_per_kind_and_counts(cli: CLI, tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")

    def spoil(data: dict) -> None:
        anns = data["annotations"]  # ids 1, 2 (crowd) on image 100; 3, 4, 5 on 101..103
        anns[3]["id"] = 3  # duplicate of annotation 3: image 102 keeps no label
        anns[4]["category_id"] = 999  # image 103 keeps no label
        anns.append({"id": 7, "image_id": 100, "category_id": 5, "bbox": [1, 1, 0, 5],
                     "area": 0.0, "iscrowd": 0})  # fmt: skip
        anns.append({"id": 8, "image_id": 100, "category_id": 5, "bbox": [1, 1, -2, 5],
                     "area": 0.0, "iscrowd": 0})  # fmt: skip
        _add_truncated_image(root, data)

    _edit(root, "train", spoil)
    shutil.copytree(root / "val", root / "test")  # a test split, for `test` below
    shutil.copy(root / "annotations" / "instances_val.json", root / "annotations" / "instances_test.json")  # fmt: skip
    run = tmp_path / "run"
    env = {"PYTHONWARNINGS": "default"}
    proc = cli(*COCO, f"data.root={root}", "data.on_bad=skip", f"hydra.run.dir={run}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in proc.stderr.splitlines() if "BadDataWarning: skipped" in line]
    kinds = ["duplicate_annotation_id", "unknown_category", "zero_area_box", "unreadable_image"]
    assert sorted(w.split("(")[1].split(")")[0] for w in warned) == sorted(kinds)
    data = json.loads((run / "results.json").read_text())["data"]
    assert data["skipped"] == {
        "annotation_of_skipped_image": 1,
        "duplicate_annotation_id": 1,
        "unknown_category": 1,
        "unlabelled_image_for_classification": 2,
        "unreadable_image": 1,
        "zero_area_box": 2,
    }
    assert data["skipped_total"] == 8 and data["on_bad"] == "skip" and data["format"] == "coco"
    assert "annotation id 5 (image 3.png): unknown category id 999" in data["examples"]["unknown_category"]  # fmt: skip
    # `test` on the same data reports the same counts
    tested = tmp_path / "tested"
    proc = cli("test", *COCO, f"data.root={root}", "data.on_bad=skip", f"hydra.run.dir={tested}",
               f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tested / "results.json").read_text())["data"] == data


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.max_epochs=abc", "error: trainer.max_epochs='abc': expected int or null, got str"),
        ("optimizer.lr=-1", "error: optimizer.lr=-1 is invalid for torch.optim.AdamW: Invalid learning rate: -1"),
        ("data.root={file}/x", "error: cannot create the generated dataset under data.root {file}/x: {file} is a file"),
    ],
)  # fmt: skip
def test_config_mistake_is_one_line(override: str, expected: str, cli: CLI, tmp_path: Path) -> None:
    """One of each check (trainer keys, optimizer values, the generated data's root); the other
    values in tests/test_runner.py and tests/data/test_shapes.py. The root is checked before
    torch and Lightning are imported (runner.check_paths)."""
    (tmp_path / "file").write_text("")
    override, expected = (s.format(file=tmp_path / "file") for s in (override, expected))
    proc = cli(*FAST, "data.num_train=8", "data.num_val=4", "data.num_test=4", override,
               env=IMPORT_TIMES)  # fmt: skip
    imported, proc.stderr = split_imports(proc.stderr)
    assert one_error_line(proc).startswith(expected)
    if override.startswith("data.root"):
        assert "omegaconf" in imported and not {"torch", "pytorch_lightning"} & imported


def test_file_format_root_that_is_not_a_folder(cli: CLI, tmp_path: Path) -> None:
    """Checked before torch and Lightning are imported (runner.check_paths): at once."""
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "x"
    proc = cli("data=imagefolder", *FAST, f"data.root={root}", env=IMPORT_TIMES)
    imported, proc.stderr = split_imports(proc.stderr)
    line = one_error_line(proc)
    assert line == (
        f"error: data format 'imagefolder': data.root {root} is not a folder "
        f"({tmp_path / 'file'} is a file)"
    )
    assert "omegaconf" in imported and not {"torch", "pytorch_lightning"} & imported


def test_image_above_the_pixel_limit_names_the_key(cli: CLI, tmp_path: Path) -> None:
    root = write_coco(tmp_path / "coco")  # 32x32 images
    line = one_error_line(cli(*COCO, f"data.root={root}", "data.max_image_pixels=300"))
    assert line.startswith(
        f"error: {root / 'annotations' / 'instances_train.json'}: image id 100: "
    )
    assert line.endswith(
        f"image {root / 'train' / '0.png'} has 1024 pixels, more than the "
        "decompression-bomb limit of 300 pixels; raise the limit with data.max_image_pixels=N "
        "(set data.on_bad=skip to skip such entries)"
    )
