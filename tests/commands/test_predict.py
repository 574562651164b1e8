"""The predict command: a folder's tree is mirrored, no output overwrites another, and every JSON
names its input by the path relative to the input folder (CLI in a subprocess, PNG/JPEG inputs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import visionkit
from tests.conftest import FAST, command_args, readme_task_commands
from visionkit.commands.predict import find_images, output_names
from visionkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from visionkit.errors import ConfigError

SMALL = ["data.num_workers=0", "data.batch_size=4", "model.backbone.channels=[8,8,16,16]"]
# the issue's tree, an input whose name is another's label-map name, and (for `semantic`) two
# inputs of one folder with the same stem; each of its own size, so a mix-up shows
ISSUE_TREE = {"a/img.png": (40, 30), "b/img.png": (36, 44), "img.jpg": (50, 20), "x.png": (33, 27), "x_labels.png": (29, 35)}  # fmt: skip
ISSUE_OUTPUTS = {"a/img.png": "a/img.png", "b/img.png": "b/img.png", "img.jpg": "img.png", "x.png": "x.png", "x_labels.png": "x_labels.png"}  # fmt: skip
SAME_STEM = {**ISSUE_TREE, "img.png": (45, 25)}
SAME_STEM_OUTPUTS = {**ISSUE_OUTPUTS, "img.jpg": "img.jpg.png", "img.png": "img.png.png"}


def write_tree(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    """Random RGB pictures (PNG or JPEG by suffix) at the given relative paths and sizes."""
    rng = np.random.default_rng(0)
    for name, (w, h) in sizes.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    (root / "notes.txt").write_text("not an image")
    return root


def train(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, name: str, *overrides: str) -> Path:  # fmt: skip
    run = tmp_path_factory.mktemp(name) / "run"
    env = {**os.environ, "VISIONKIT_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}  # fmt: skip
    args = [sys.executable, "-m", "visionkit", *overrides, *FAST, *SMALL, "test_after_fit=false", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A classification checkpoint trained on a class-per-folder tree of PNGs."""
    root = tmp_path_factory.mktemp("folders")
    write_tree(root, {f"{c}/{i}.png": (32, 32) for c in ("cat", "dog") for i in range(6)})
    return train(tmp_path_factory, data_dir, "cls", "data=imagefolder", f"data.root={root}", "data.image_size=32")  # fmt: skip


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A semantic segmentation checkpoint (the small generated set: training data is incidental),
    from the README's command, smaller data and model appended."""
    readme = command_args(readme_task_commands()["semantic_segmentation"])
    return train(tmp_path_factory, data_dir, "seg", *readme, "data.image_size=48", "data.num_train=16", "data.num_val=8", "data.num_test=8")  # fmt: skip


def predict(cli, ckpt: Path, inputs: Path, out: str) -> subprocess.CompletedProcess:
    """No data override: the checkpoint's own preprocessing; batches of 2 read by 1 worker."""
    return cli("predict", f"ckpt_path={ckpt}", f"input={inputs}", "batch_size=2", "num_workers=1", f"hydra.run.dir={out}", check=True)  # fmt: skip


def pictures(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def check_outputs(folder: Path, expected: dict[str, str], sizes: dict[str, tuple[int, int]]) -> None:  # fmt: skip
    """One PNG per input at its expected name, of its input's size; no two with the same bytes."""
    found = pictures(folder)
    assert sorted(found) == sorted(expected.values())
    for name, output in expected.items():
        with Image.open(found[output]) as picture:
            assert (picture.format, picture.size) == ("PNG", sizes[name]), name
    assert len({p.read_bytes() for p in found.values()}) == len(found)


def test_classification_outputs_mirror_the_tree_and_never_collide(cli, classifier: Path, tmp_path: Path) -> None:  # fmt: skip
    inputs = write_tree(tmp_path / "inputs", ISSUE_TREE)
    proc = predict(cli, classifier, inputs, "p")
    out = tmp_path / "p"
    check_outputs(out / "predictions", ISSUE_OUTPUTS, ISSUE_TREE)
    assert f"predict: 5 images of {inputs}" in proc.stdout and "(1 other files skipped" in proc.stdout  # fmt: skip
    predictions = json.loads((out / "predictions.json").read_text())
    assert sorted(p["file_name"] for p in predictions) == sorted(ISSUE_TREE)
    assert all(p["label"] in ("cat", "dog") and 0 <= p["score"] <= 1 for p in predictions)
    images = json.loads((out / "images.json").read_text())
    assert {im["file_name"]: im["overlay"] for im in images} == {k: f"predictions/{v}" for k, v in ISSUE_OUTPUTS.items()}  # fmt: skip
    assert {im["file_name"]: (im["width"], im["height"]) for im in images} == ISSUE_TREE
    # trained with data=imagefolder data.image_size=32: predicted at 32 px (the checkpoint's
    # preprocessing), not at the default data's size, though no data override was given
    model = visionkit.load(classifier)
    with torch.no_grad():
        for p in predictions:
            raw = torch.from_numpy(np.asarray(Image.open(inputs / p["file_name"]).convert("RGB")).transpose(2, 0, 1).copy())  # fmt: skip
            x = TF.normalize(TF.resize(raw, [32, 32], antialias=True).float() / 255, IMAGENET_MEAN, IMAGENET_STD)  # fmt: skip
            probs = model.task(x[None]).softmax(dim=1)[0]
            assert p["label"] == model.class_names[int(probs.argmax())]
            assert abs(p["score"] - float(probs.max())) < 1e-5, p


def test_semantic_overlays_and_label_maps_in_separate_trees(cli, segmenter: Path, tmp_path: Path) -> None:  # fmt: skip
    inputs = write_tree(tmp_path / "inputs", SAME_STEM)
    predict(cli, segmenter, inputs, "p")
    out = tmp_path / "p"
    check_outputs(out / "predictions", SAME_STEM_OUTPUTS, SAME_STEM)
    assert sorted(pictures(out / "labels")) == sorted(SAME_STEM_OUTPUTS.values())
    images = json.loads((out / "images.json").read_text())
    assert sorted(im["file_name"] for im in images) == sorted(SAME_STEM)
    for im in images:
        label_map = np.asarray(Image.open(out / im["labels"]))
        assert label_map.shape[:2] == (im["height"], im["width"]), im["file_name"]
        assert im["labels"] == f"labels/{SAME_STEM_OUTPUTS[im['file_name']]}"
        assert label_map.max() < 7  # class indices (shapes: background + 6), not colours


FULL_NAME_CLASH = {"y.jpg": "y.jpg.png", "y.png": "y.png.png", "y.jpg.png": "y.jpg.png.png"}
CASE_CLASH = {"Y.png": "Y.png.png", "y.jpg": "y.jpg.png"}  # one file on case-insensitive disks
PER_FOLDER = {"d/y.png": "d/y.png.png", "d/y.tif": "d/y.tif.png", "e/y.png": "e/y.png"}


@pytest.mark.parametrize(
    "expected",
    # the issue's tree; stems shared in one folder; a full name equal to another's stem name
    [ISSUE_OUTPUTS, SAME_STEM_OUTPUTS, FULL_NAME_CLASH, CASE_CLASH, PER_FOLDER],
)
def test_output_names_are_unique(tmp_path: Path, expected: dict[str, str]) -> None:
    got = output_names([tmp_path / n for n in expected], tmp_path)
    assert {f.relative_to(tmp_path).as_posix(): str(name) for f, name in got.items()} == expected
    assert all(isinstance(name, PurePosixPath) for name in got.values())


def test_find_images_searches_sub_folders_unless_told_not_to(tmp_path: Path) -> None:
    write_tree(tmp_path, ISSUE_TREE)
    root, images, others = find_images(tmp_path)
    assert root == tmp_path and sorted(p.relative_to(tmp_path).as_posix() for p in images) == sorted(ISSUE_TREE)  # fmt: skip
    assert others == [tmp_path / "notes.txt"]
    # an earlier run's directory inside the input folder (predict input=. twice) is skipped
    earlier = write_tree(tmp_path / "outputs" / "predict" / "t", {"predictions/img.png": (8, 8)})
    (earlier / ".hydra").mkdir()
    assert find_images(tmp_path)[1] == images
    assert earlier / "predictions" / "img.png" in find_images(tmp_path)[2]
    _, top, _ = find_images(tmp_path, recursive=False)
    assert [p.name for p in top] == ["img.jpg", "x.png", "x_labels.png"]
    assert find_images(tmp_path / "x.png") == (tmp_path, [tmp_path / "x.png"], [])
    only_sub = write_tree(tmp_path / "only_sub", {"inner/z.png": (8, 8)})
    with pytest.raises(ConfigError, match="recursive=false"):
        find_images(only_sub, recursive=False)


def test_predict_needs_an_input(cli, tmp_path: Path) -> None:
    proc = cli("predict", "ckpt_path=missing.ckpt", f"input={tmp_path / 'nothing'}")
    assert proc.returncode != 0
    assert "input" in proc.stderr and "Traceback" not in proc.stderr
