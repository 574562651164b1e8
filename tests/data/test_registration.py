"""Registration: lazy (no torch / Lightning on import), every DATASETS entry loads and has a YAML."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from visionkit.plugins import conf_dir, load_builtins
from visionkit.registries import DATASETS, TRANSFORMS

load_builtins()


def test_importing_the_data_package_is_light() -> None:
    code = (
        "import sys, visionkit.data; "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'torchvision') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_loads_and_has_a_config(name: str) -> None:
    import pytorch_lightning as pl
    import yaml

    cls = DATASETS.get(name)
    assert issubclass(cls, pl.LightningDataModule)
    if DATASETS.source(name) == "visionkit":
        cfg = yaml.safe_load((Path(conf_dir()) / "data" / f"{name}.yaml").read_text())
        assert cfg["name"] == name


@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_every_transform_resolves(name: str) -> None:
    assert callable(TRANSFORMS.get(name))
