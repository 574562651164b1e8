"""Shared by the sweep tests: a small class-per-folder dataset written as PNG files, the
README's Sweep commands as argv, and the metrics two runs must agree on."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.conftest import FAST, readme_commands

COLOURS = {"ant": (220, 40, 40), "bee": (40, 200, 40), "cow": (40, 60, 230)}
COUNTS = {"train": 6, "val": 3, "test": 3}
# the FAST overrides without data.num_workers=0: joblib must work with the default workers
FAST_DEFAULT_WORKERS = [o for o in FAST if not o.startswith("data.num_workers")]


def write_imagefolder(root: Path) -> Path:
    """root/{train,val,test}/<class>/<n>.png: a faintly coloured square on noise per image."""
    rng = np.random.default_rng(0)
    for split, count in COUNTS.items():
        for name, colour in COLOURS.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                arr = rng.integers(90, 140, (40, 40, 3), dtype=np.uint8)
                x, y = (int(v) for v in rng.integers(0, 20, 2))
                square = arr[y : y + 18, x : x + 18]  # faint: a few batches do not learn it
                square[:] = (0.85 * square + 0.15 * np.array(colour)).astype(np.uint8)
                Image.fromarray(arr).save(folder / f"{i}.png")
    return root


def small(root: Path) -> list[str]:
    """Overrides training a small classifier on ``write_imagefolder(root)``."""
    return ["data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=4"]


def readme_argv(prefix: str, **placeholders: str) -> list[str]:
    """The README command that starts with ``prefix``, as argv after ``python -m visionkit``
    (or the full argv of ``torchrun``), with ``<placeholder>``s replaced."""
    matches = [c for c in readme_commands("Sweep") if c.startswith(prefix)]
    assert len(matches) >= 1, f"README's Sweep section has no command starting with {prefix!r}"
    line = matches[0]
    for name, value in placeholders.items():
        line = line.replace(f"<{name}>", value)
    assert not re.search(r"<\w+>", line), f"unreplaced placeholder in {line!r}"
    argv = shlex.split(line)
    return argv[3:] if argv[:3] == ["python", "-m", "visionkit"] else argv


def metrics(results: dict[str, Any]) -> dict[str, float]:
    """The figures of a run that do not depend on where it ran: train/val/test scalars."""
    return {
        k: v
        for k, v in results.items()
        if k.startswith(("train/", "val/", "test/")) and isinstance(v, float)
    }
