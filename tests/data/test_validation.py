"""Bad-data bookkeeping and file checks: one warning per kind, counts for results.json, what each
verification level finds, parallel checks in order."""

from __future__ import annotations

import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.data.validation import (
    BadDataReport,
    BadDataWarning,
    check_image_file,
    check_image_files,
    parallel_map,
)
from visionkit.errors import ConfigError, DataError


def test_skip_mode_warns_once_per_kind_and_counts_every_item() -> None:
    report = BadDataReport("skip", source="coco")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(5):
            report.problem("unknown_category", f"annotation id {i}: unknown category id 9")
        report.problem("zero_area_box", "annotation id 7: bbox [0, 0, 0, 1]")
    messages = [str(w.message) for w in caught if w.category is BadDataWarning]
    assert len(messages) == 2
    assert "annotation id 0" in messages[0] and "(unknown_category)" in messages[0]
    report.note("image_without_annotations")
    assert report.to_dict() == {
        "on_bad": "skip",
        "skipped_total": 6,
        "skipped": {"unknown_category": 5, "zero_area_box": 1},
        "notes": {"image_without_annotations": 1},
        "examples": {
            "unknown_category": "annotation id 0: unknown category id 9",
            "zero_area_box": "annotation id 7: bbox [0, 0, 0, 1]",
        },
    }


def test_error_mode_raises_with_the_skip_hint() -> None:
    with pytest.raises(DataError, match=r"^a\.png: broken \(set data\.on_bad=skip"):
        BadDataReport("error").problem("unreadable_image", "a.png: broken")
    with pytest.raises(ConfigError, match=r"data\.on_bad"):
        BadDataReport("ignore")


def _jpeg(path: Path, keep: float = 1.0) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
    return path


def test_levels_find_what_they_promise(tmp_path: Path) -> None:
    good, cut = _jpeg(tmp_path / "good.jpg"), _jpeg(tmp_path / "cut.jpg", keep=0.7)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("hello")
    for verify in ("header", "full"):
        assert check_image_file(good, verify).size == (40, 30)
        assert check_image_file(empty, verify).kind == "empty_image"
        assert check_image_file(text, verify).kind == "unreadable_image"
        assert check_image_file(tmp_path / "no.png", verify).kind == "missing_image"
    assert check_image_file(cut, "header").reason is None  # the header parses
    full = check_image_file(cut, "full")
    assert full.kind == "unreadable_image" and "truncated" in full.reason
    assert (
        check_image_file(cut, "none").reason is None and check_image_file(cut, "none").size is None
    )
    big = check_image_file(good, "header", max_pixels=1199)
    assert big.kind == "image_too_large" and "data.max_image_pixels" in big.reason
    with pytest.raises(ConfigError, match=r"data\.verify_images"):
        check_image_file(good, "deep")


def test_exif_rotated_size_is_the_loaded_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30)).save(tmp_path / "r.jpg", exif=exif)
    assert check_image_file(tmp_path / "r.jpg", "header").size == (30, 40)


def test_parallel_checks_keep_the_order(tmp_path: Path) -> None:
    paths = [_jpeg(tmp_path / f"{i}.jpg", keep=0.7 if i % 3 == 0 else 1.0) for i in range(12)]
    checks = list(check_image_files(paths, "full"))
    assert [c.path for c in checks] == paths
    assert [c.reason is not None for c in checks] == [i % 3 == 0 for i in range(12)]
    assert list(parallel_map(lambda x: x * x, range(50), chunk=7)) == [x * x for x in range(50)]


def test_work_is_taken_one_chunk_at_a_time() -> None:
    """A consumer stopping at the first bad file (error mode) must not leave the whole dataset
    queued behind it: items are pulled from the input one chunk at a time."""
    pulled: list[int] = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield i

    results = parallel_map(lambda x: x, source(), chunk=16)
    assert next(results) == 0
    assert len(pulled) == 16
    results.close()


ABANDONED = """
import threading, time
from visionkit.data.validation import parallel_map
results = parallel_map(lambda x: time.sleep(0.2) or x, range(100), chunk=8)
assert next(results) == 0
# the garbage collector may close an abandoned map anywhere, even inside threading's lock that
# a starting thread holds; closing it there must not join the pool's threads
with threading._shutdown_locks_lock:
    results.close()
print("closed")
"""


@pytest.mark.skipif(not hasattr(threading, "_shutdown_locks_lock"), reason="CPython <= 3.12's lock")  # fmt: skip
def test_an_abandoned_map_closes_without_joining_its_threads() -> None:
    out = subprocess.run([sys.executable, "-c", ABANDONED], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "closed"


def test_root_formats_are_the_built_in_formats_that_require_their_root(tmp_path: Path) -> None:
    """ROOT_FORMATS (checked before the heavy imports) lists exactly the built-in formats whose
    setup requires an existing data.root, with the same message; shapes generates its root."""
    from visionkit.data.validation import ROOT_FORMATS, require_root
    from visionkit.registries import DATASETS

    built_in = {n for n in DATASETS.names() if DATASETS.source(n) == "visionkit"}
    assert built_in == {*ROOT_FORMATS, "shapes", "digits"}
    tasks = {"imagefolder": "classification", "masks": "semantic_segmentation"}
    missing = tmp_path / "missing"
    for name in ROOT_FORMATS:
        dm = DATASETS.build({"name": name, "root": str(missing)}, task=tasks.get(name, "detection"))
        with pytest.raises(ConfigError) as err:
            dm.setup("fit")
        with pytest.raises(ConfigError) as early:
            require_root(name, missing)
        assert (
            str(err.value)
            == str(early.value)
            == (f"data format '{name}': data.root {missing} is not a folder (it does not exist)")
        )
