"""``python -m visionkit stats`` as a user runs it: stats.json against NumPy, the PNG, and the
printed normalisation overrides working as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CLI

SIZES = [(20, 30), (7, 13), (64, 48), (33, 33), (5, 90)]  # (height, width)


def write_imagefolder(root: Path) -> list[Path]:
    """root/{train,val}/<class>/*.png of different sizes and modes; returns the training files."""
    rng = np.random.default_rng(7)
    files = []
    for split in ("train", "val"):
        for c, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i, (h, w) in enumerate(SIZES[: 3 + c if split == "train" else 1]):
                arr = rng.integers(0, 200, (h, w, 3), dtype=np.uint8) + 50 * c
                path = folder / f"{i}.png"
                Image.fromarray(arr).convert("L" if i == 1 else "RGB").save(path)
                if split == "train":
                    files.append(path)
    return files


def test_stats_of_an_imagefolder(cli: CLI, tmp_path: Path) -> None:
    files = write_imagefolder(tmp_path / "pets")
    proc = cli("stats", "data=imagefolder", f"data.root={tmp_path / 'pets'}", "data.num_workers=0", "hydra.run.dir=s", check=True)  # fmt: skip
    stats = json.loads((tmp_path / "s" / "stats.json").read_text())
    pixels = np.concatenate([np.asarray(Image.open(f).convert("RGB")).reshape(-1, 3) / 255.0 for f in files])  # fmt: skip
    assert stats["images"] == len(files) == 7 and stats["pixels"] == len(pixels)
    assert stats["mean"] == pytest.approx(pixels.mean(axis=0), abs=1e-12)
    assert stats["std"] == pytest.approx(pixels.std(axis=0), abs=1e-12)
    assert stats["class_images"] == {"cat": 3, "dog": 4}
    heights = [h for h, _ in SIZES[:3] + SIZES[:4]]
    assert stats["image_sizes"]["height"]["max"] == max(heights)
    assert stats["image_sizes"]["distinct"] == 4
    picture = tmp_path / "s" / "stats.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = re.search(r"normalise with: (.*)", proc.stdout).group(1).split()
    assert printed == stats["overrides"].split() and printed[0].startswith("data.mean=[")
    # the overrides work as printed: they compose and reach the datamodule's Normalize
    from tests.test_configs import compose_cfg
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    cfg = compose_cfg(["data=imagefolder", f"data.root={tmp_path / 'pets'}", *printed])
    dm = DATASETS.build(cfg.data, task="classification")
    assert dm.mean == pytest.approx(pixels.mean(axis=0), abs=1e-4)
    assert dm.std == pytest.approx(pixels.std(axis=0), abs=1e-4)
