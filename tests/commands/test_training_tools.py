"""The training tools as a user runs them (subprocess): the commands of README.md's "Training
tools" section as written, on data written here in the real formats (class folders with a test
split; COCO json + PNG with a crowd region): EMA + early stopping + class weights + the
class-balanced sampler + gradient clipping and accumulation + TTA on the final test, then `test`
with multiscale TTA; instance segmentation with mosaic, copy-paste and the repeat-factor sampler."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import FAST, readme_commands, run_cli
from tests.data.conftest import write_coco, write_imagefolder
from visionkit.data.imbalance import class_weights

TIMEOUT = 600
TRAIN, TEST, INSTANCES = readme_commands("Training tools")


def readme_args(command: str, replace: dict[str, str] | None = None) -> list[str]:
    """The arguments of a README command after ``python -m visionkit``, with the values of the
    keys in ``replace`` (placeholders) replaced."""
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "visionkit"], command
    replace = replace or {}
    return [w if w.split("=", 1)[0] not in replace else f"{w.split('=', 1)[0]}={replace[w.split('=', 1)[0]]}" for w in words[3:]]  # fmt: skip


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict:
    base = tmp_path_factory.mktemp("tools")
    root = write_imagefolder(base / "pets", per_class=4, size=20)
    shutil.copytree(root / "val", root / "test")
    for i in (2, 3):  # imbalance: 4 ant, 4 bee, 2 cow in train
        (root / "train" / "cow" / f"{i}.png").unlink()
    run_dir = base / "run"
    run_cli(
        *readme_args(TRAIN), "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.batch_size=2",
        *FAST, "trainer.limit_train_batches=4", "callbacks.ema.warmup_tau=0", "callbacks.ema.decay=0.5",
        f"hydra.run.dir={run_dir}",
        cwd=base, data_dir=data_dir, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    return {"base": base, "root": root, "run": run_dir, "results": json.loads((run_dir / "results.json").read_text())}  # fmt: skip


def test_train_reports_ema_early_stopping_and_tta(classification_run: dict) -> None:
    results = classification_run["results"]
    assert results["early_stopping"]["stopped"] is False
    assert results["early_stopping"]["reason"] == "not_stopped"
    assert results["early_stopping"]["monitor"] == "val/acc"
    assert results["early_stopping"]["patience"] == 3
    assert results["ema"]["updates"] == 2  # 4 training batches, 2 accumulated per optimizer step
    assert results["tta"]["views"] == 2 and "test/acc" in results
    ckpt = torch.load(results["best_checkpoint"], weights_only=True)
    # the saved weights are the average; the raw ones are kept for resuming
    assert any(not torch.equal(v, ckpt["current_model_state"][k]) for k, v in ckpt["state_dict"].items() if v.is_floating_point())  # fmt: skip
    # from the training folders' counts (ant, bee, cow), kept in the checkpoint
    expected = class_weights([4, 4, 2], "effective_number", 0.999)
    assert ckpt["hyper_parameters"]["class_weights"] == pytest.approx(expected)
    assert expected[2] > expected[0]


def test_test_command_with_multiscale_tta(classification_run: dict, data_dir: Path) -> None:
    out = classification_run["base"] / "test_run"
    run_cli(
        *readme_args(TEST, {"ckpt_path": classification_run["results"]["best_checkpoint"]}), "data=imagefolder",
        f"data.root={classification_run['root']}", "data.image_size=32", "data.num_workers=0",
        "trainer.accelerator=cpu", "callbacks.progress=null", f"hydra.run.dir={out}",
        cwd=classification_run["base"], data_dir=data_dir, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert results["tta"]["views"] == 6 and results["tta"]["scales"] == [0.83, 1.0, 1.2]
    assert 0.0 <= results["test/acc"] <= 1.0


def test_instance_segmentation_with_mosaic_copy_paste_and_repeat_factor(tmp_path: Path, data_dir: Path) -> None:  # fmt: skip
    root = write_coco(tmp_path / "coco", n=4, size=32)
    run_dir = tmp_path / "run"
    proc = run_cli(
        *readme_args(INSTANCES, {"data.sampler": "{name:repeat_factor,threshold:0.9}"}), "data=coco",
        f"data.root={root}", "data.batch_size=2", *FAST, "model.head.min_size=48",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path, data_dir=data_dir, timeout=TIMEOUT, check=True,
    )  # fmt: skip
    assert proc.returncode == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert "val/segm_map" in results
