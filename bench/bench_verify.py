"""Setup cost of ``data.verify_images`` (none | header | full) on an imagefolder of small JPEGs.

``full`` decodes every image at setup (in a thread pool) so truncated files are found where
``data.on_bad=skip`` can act; ``header`` parses only. The reference is one plain serial decode pass
over the same files (what one epoch's loading costs at least): ratio = setup time / that pass.
Rounds are interleaved, medians reported.
Run: ``.venv/bin/python bench/bench_verify.py``; writes bench/results/bench_verify.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_table
from PIL import Image

from visionkit.plugins import load_builtins
from visionkit.registries import DATASETS


def write_images(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        folder = root / f"c{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 255, (12, 16, 3)).repeat(20, 0).repeat(20, 1).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)  # 320x240
        paths.append(folder / f"{i}.jpg")
    return paths


def setup_time(root: Path, verify: str) -> float:
    spec = {"name": "imagefolder", "root": str(root), "num_workers": 0, "verify_images": verify}
    dm = DATASETS.build(spec, task="classification")
    start = time.perf_counter()
    dm.setup("fit")
    return time.perf_counter() - start


def decode_pass(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as im:
            im.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    load_builtins()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = write_images(root, args.images)
        times: dict[str, list[float]] = {"none": [], "header": [], "full": [], "decode": []}
        for _ in range(args.rounds):
            for verify in ("none", "header", "full"):
                times[verify].append(setup_time(root, verify))
            times["decode"].append(decode_pass(paths))
    ref = statistics.median(times["decode"])
    rows = [
        [f"verify_images={v}", statistics.median(times[v]), statistics.median(times[v]) / ref]
        for v in ("none", "header", "full")
    ]
    rows.append(["plain serial decode pass (reference)", ref, 1.0])
    write_table(
        "bench_verify",
        f"Setup cost of data.verify_images on {args.images} JPEGs (320x240), median of {args.rounds}",
        ["setup", "seconds", "ratio to one decode pass"],
        rows,
    )


if __name__ == "__main__":
    main()
