"""Shared data fixtures: one session-wide data directory (VISIONKIT_DATA_DIR) with tiny shapes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TINY = {"image_size": 32, "num_train": 20, "num_val": 8, "num_test": 8, "num_workers": 0}
TINY_MULTI = {**TINY, "image_size": 48, "max_objects": 3, "batch_size": 4}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session data directory, also exported as VISIONKIT_DATA_DIR for subprocesses."""
    path = tmp_path_factory.mktemp("visionkit_data")
    os.environ["VISIONKIT_DATA_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def shapes_root(data_dir: Path) -> Path:
    return data_dir / "shapes"


@pytest.fixture(scope="session", autouse=False)
def loaded() -> None:
    """Built-in parts registered (DATASETS, TRANSFORMS, ...)."""
    from visionkit.plugins import load_builtins

    load_builtins()


@pytest.fixture(scope="session")
def make_shapes():
    """``make_shapes(root, task, **overrides)``: a prepared and set-up tiny shapes datamodule."""
    return build_shapes


def build_shapes(root: Path, task: str, **overrides):
    """A prepared and set-up tiny shapes datamodule."""
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    base = TINY if task == "classification" else TINY_MULTI
    dm = DATASETS.build({"name": "shapes", "root": str(root), **base, **overrides}, task=task)
    dm.prepare_data()
    dm.setup("fit")
    return dm
