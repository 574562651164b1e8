"""The embedded shapes generator: deterministic, cached per parameters, race-safe, real COCO."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.data.shapes.generator import CATEGORY_IDS, SHAPE_NAMES, ShapesSpec, ensure_shapes
from visionkit.errors import ConfigError

SPEC = ShapesSpec(image_size=32, num_train=12, num_val=4, num_test=4, seed=3)
MULTI = ShapesSpec(image_size=48, num_train=12, num_val=4, num_test=4, min_objects=1,
                   max_objects=4, min_size=0.12, max_size=0.3, seed=3)  # fmt: skip


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = ensure_shapes(tmp_path / "a", SPEC)
    b = ensure_shapes(tmp_path / "b", SPEC)
    assert _digest(a) == _digest(b)
    c = ensure_shapes(tmp_path / "c", ShapesSpec(**{**SPEC.__dict__, "seed": 4}))
    assert _digest(a) != _digest(c)


def test_cached_and_variants_coexist(tmp_path: Path) -> None:
    a = ensure_shapes(tmp_path, SPEC)
    stamp = (a / "annotations" / "instances_train.json").stat().st_mtime_ns
    assert ensure_shapes(tmp_path, SPEC) == a
    assert (a / "annotations" / "instances_train.json").stat().st_mtime_ns == stamp
    m = ensure_shapes(tmp_path, MULTI)
    assert m != a and a.is_dir() and m.is_dir()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no leftovers


def _worker(root: str) -> str:
    return str(ensure_shapes(root, SPEC))


def test_concurrent_generation_is_race_safe(tmp_path: Path) -> None:
    with mp.get_context("spawn").Pool(2) as pool:
        paths = pool.map(_worker, [str(tmp_path)] * 2)
    assert paths[0] == paths[1]
    ref = ensure_shapes(tmp_path / "ref", SPEC)
    assert _digest(Path(paths[0])) == _digest(ref)
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


@pytest.mark.parametrize("spec", [SPEC, MULTI], ids=["one", "multi"])
def test_real_coco_files(tmp_path: Path, spec: ShapesSpec) -> None:
    from pycocotools.coco import COCO

    root = ensure_shapes(tmp_path, spec)
    for split in ("train", "val", "test"):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert sorted(coco.getCatIds()) == list(CATEGORY_IDS)
        assert [c["name"] for c in coco.loadCats(list(CATEGORY_IDS))] == list(SHAPE_NAMES)
        assert len(coco.getImgIds()) == spec.count(split)
        for img in coco.loadImgs(coco.getImgIds()):
            with Image.open(root / split / img["file_name"]) as im:
                assert im.size == (spec.image_size, spec.image_size) and im.mode == "RGB"
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert spec.min_objects <= len(anns) <= spec.max_objects
            for ann in anns:
                mask = coco.annToMask(ann)
                x, y, w, h = ann["bbox"]
                assert w > 0 and h > 0 and ann["area"] > 0
                assert x >= 0 and x + w <= spec.image_size + 0.5
                assert abs(mask.sum() - ann["area"]) <= 0.05 * ann["area"] + 2
                ys, xs = np.nonzero(mask)  # the box bounds the mask (within rasterisation)
                assert xs.min() >= x - 1.5 and xs.max() + 1 <= x + w + 1.5
                assert ys.min() >= y - 1.5 and ys.max() + 1 <= y + h + 1.5


def test_one_shape_per_image_for_classification(tmp_path: Path) -> None:
    root = ensure_shapes(tmp_path, SPEC)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    per_image = {}
    for ann in data["annotations"]:
        per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert sorted(per_image.values()) == [1] * SPEC.num_train


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 8}, {"min_objects": 3, "max_objects": 2}, {"max_size": 0.7}]
)
def test_bad_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="data\\."):
        ShapesSpec(**kwargs)


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_a_root_that_cannot_be_created_is_one_config_error(where: str, tmp_path: Path) -> None:
    """data.root under a file, or where no folder can be made (/proc): the root and why."""
    (tmp_path / "file").write_text("")
    root = tmp_path / "file" / "x" if where == "under_a_file" else Path("/proc/visionkit")
    with pytest.raises(ConfigError) as err:
        ensure_shapes(root, SPEC)
    expected = f"cannot create the generated dataset under data.root {root}: "
    assert str(err.value).startswith(expected)
    if where == "under_a_file":
        assert str(err.value) == f"{expected}{tmp_path / 'file'} is a file"
