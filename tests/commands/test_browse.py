"""``visionkit browse``: a PNG grid of augmented samples for every task, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.commands.browse import browse
from visionkit.errors import ConfigError

TINY = {"image_size": 32, "num_train": 10, "num_val": 4, "num_test": 0, "num_workers": 0}


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        ("classification", {"mixup_alpha": 0.4}),
        ("semantic_segmentation", {"max_objects": 3}),
        ("detection", {"max_objects": 3}),
        ("instance_segmentation", {"max_objects": 3}),
    ],
)
def test_browse_draws_every_task(task: str, extra: dict, data_dir: Path, tmp_path: Path) -> None:
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    dm = DATASETS.build({"name": "shapes", "root": str(data_dir / "shapes"), **TINY, **extra}, task=task)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    path = browse(dm, "train", 4, tmp_path, min_tile=64)
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    assert arr.shape[0] >= 2 * 64 and arr.shape[1] >= 2 * 64  # 2x2 tiles of at least 64 px
    # annotations are drawn in palette colours: the grid holds more than the raw pictures
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    with pytest.raises(ConfigError, match="no 'test' split"):
        browse(dm, "test", 4, tmp_path)


def test_browse_cli(cli, tmp_path: Path) -> None:
    proc = cli(
        "browse", "data=shapes", "split=train", "n=8", "data.image_size=32", "data.num_train=12",
        "data.num_val=4", "data.num_test=0", "data.num_workers=0", f"hydra.run.dir={tmp_path}/run",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "run" / "browse_train.png"
    assert out.is_file() and "browse:" in proc.stdout
    with Image.open(out) as im:
        assert im.width >= 3 * 128


def test_browse_cli_bad_split_is_one_line(cli, tmp_path: Path) -> None:
    proc = cli(
        "browse", "split=nope", "data.image_size=32", "data.num_train=12", "data.num_val=4",
        "data.num_test=0", "data.num_workers=0", f"hydra.run.dir={tmp_path}/run",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "split must be train, val or test" in proc.stderr
    assert "Traceback" not in proc.stderr
