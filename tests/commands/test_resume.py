"""Resume after a real SIGKILL, as a user does it (subprocesses): nothing is lost, nothing differs.

An uninterrupted run and a run killed (SIGKILL, with its loader workers) after its first
checkpoint, then resumed with ``ckpt_path=.../last.ckpt``, train on the same imagefolder of PNGs
with the same seed. On CPU the resumed run must end with the same weights bit for bit, the same
logged rows, the same best checkpoint and score. Two scenarios: loading in the main process and
resuming in place (the default); two loader workers and resuming into another directory.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

EPOCHS = 3
TRAIN_BATCHES = 18  # 72 train images (60%) / batch 4: one epoch is ~1 s, the kill lands well within
# The monitor makes the first epoch's checkpoint the best one for good, so the best checkpoint
# always predates the crash: a resume that forgot it would call its own first epoch the best.
RUN = [
    "data=imagefolder",
    "data.image_size=16",
    "data.batch_size=4",
    "data.val_fraction=0.2",
    "data.test_fraction=0.2",
    "seed=7",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "callbacks.progress=null",
    "task.monitor=step",
    "task.monitor_mode=min",
]


def write_imagefolder(root: Path) -> None:
    """3 classes x 40 noisy 16x16 PNGs, each class brighter in one channel."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True)
        for i in range(40):
            pixels = rng.integers(0, 100, (16, 16, 3), dtype=np.uint8)
            pixels[..., index] += 120
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "visionkit", "train", *args]


def environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def train(cwd: Path, *args: str) -> None:
    proc = subprocess.run(
        command(*args), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"train {' '.join(args)}\n{proc.stderr[-4000:]}"


def read_rows(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="") as file:
            return list(csv.DictReader(file))
    except (OSError, csv.Error):  # not there yet, or being rewritten by Lightning
        return []


def train_and_kill(cwd: Path, run: Path, *args: str) -> int:
    """Start training, SIGKILL it once it has logged after its first checkpoint; its step."""
    last = run / "checkpoints" / "last.ckpt"
    log = (cwd / "killed.log").open("w")
    proc = subprocess.Popen(
        command(*args, f"hydra.run.dir={run}"),
        cwd=cwd,
        env=environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kill takes the loader workers too
    )
    deadline = time.monotonic() + 600
    try:
        # rows of epoch 1 exist: epoch 0's last.ckpt is written and rows follow it
        while not (last.exists() and any(r.get("epoch") == "1" for r in read_rows(run / "metrics.csv"))):  # fmt: skip
            if proc.poll() is not None:
                pytest.fail(
                    f"the training run ended (exit {proc.returncode}) before it could be killed "
                    f"after its first checkpoint; see {cwd / 'killed.log'}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint after 600 s")
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"the run exited ({proc.returncode}) before the kill; see {cwd / 'killed.log'}")
    step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    if step >= EPOCHS * TRAIN_BATCHES:
        pytest.fail(f"the kill landed after the last epoch (step {step}): nothing left to resume")
    return step


@pytest.fixture(scope="module", params=["in_place-workers0", "elsewhere-workers2"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The uninterrupted run, the killed-then-resumed run, and what the kill left behind."""
    in_place = request.param.startswith("in_place")
    workers = request.param[-1]
    base = tmp_path_factory.mktemp(f"resume-{request.param}")
    write_imagefolder(base / "images")
    args = [*RUN, f"data.root={base / 'images'}", f"data.num_workers={workers}"]
    full, killed = base / "full", base / "killed"
    train(base, *args, f"hydra.run.dir={full}")
    step = train_and_kill(base, killed, *args)
    before = read_rows(killed / "metrics.csv")
    killed_best = (killed / "checkpoints" / "best.ckpt").read_bytes()
    resumed = killed if in_place else base / "elsewhere"
    ckpt = f"ckpt_path={killed / 'checkpoints' / 'last.ckpt'}"
    train(base, *args, ckpt, *([] if in_place else [f"hydra.run.dir={resumed}"]))
    return {
        "full": full,
        "killed": killed,
        "resumed": resumed,
        "in_place": in_place,
        "step": step,
        "rows_before": before,
        "killed_best": killed_best,
    }


def state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_resumed_weights_equal_the_uninterrupted_run_bit_for_bit(runs: dict) -> None:
    want = state(runs["full"] / "checkpoints" / "last.ckpt")
    got = state(runs["resumed"] / "checkpoints" / "last.ckpt")
    assert (got["epoch"], got["global_step"]) == (want["epoch"], want["global_step"])
    assert got["global_step"] == EPOCHS * TRAIN_BATCHES
    assert list(got["state_dict"]) == list(want["state_dict"])
    differ = [k for k, v in want["state_dict"].items() if not torch.equal(v, got["state_dict"][k])]
    assert not differ, f"tensors that differ from the uninterrupted run: {differ}"


def test_best_checkpoint_and_score_from_before_the_crash_are_remembered(runs: dict) -> None:
    want = json.loads((runs["full"] / "results.json").read_text())
    got = json.loads((runs["resumed"] / "results.json").read_text())
    assert want["best_score"] == {"step": TRAIN_BATCHES}  # the first epoch's, as set up
    assert got["best_score"] == want["best_score"]
    # resumed elsewhere, the best stays where it was saved: the killed run's directory
    assert Path(got["best_checkpoint"]) == runs["killed"] / "checkpoints" / "best.ckpt"
    best = state(Path(got["best_checkpoint"]))
    full_best = state(runs["full"] / "checkpoints" / "best.ckpt")
    assert best["global_step"] == TRAIN_BATCHES
    assert all(torch.equal(v, best["state_dict"][k]) for k, v in full_best["state_dict"].items())
    # ... and that is the checkpoint the resumed run tested
    tested = {k: v for k, v in got.items() if k.startswith("test/")}
    assert tested and tested == {k: v for k, v in want.items() if k.startswith("test/")}
    if not runs["in_place"]:  # the killed run's directory is left as it was
        assert (runs["killed"] / "checkpoints" / "best.ckpt").read_bytes() == runs["killed_best"]


def cells(row: dict[str, str]) -> dict[str, str]:
    """A row's filled cells (the killed run's file has fewer columns: no test/* yet)."""
    return {k: v for k, v in row.items() if v != ""}


def test_metrics_csv_keeps_the_rows_from_before_the_crash(runs: dict) -> None:
    step = runs["step"]
    full = read_rows(runs["full"] / "metrics.csv")
    abandoned = [r for r in runs["rows_before"] if float(r["step"]) >= step]
    assert abandoned, "the kill left no rows after the checkpoint: the purge went untested"
    kept = [cells(r) for r in runs["rows_before"] if float(r["step"]) < step]
    assert kept and kept == [cells(r) for r in full[: len(kept)]]
    got = read_rows(runs["resumed"] / "metrics.csv")
    if runs["in_place"]:
        # the rows before the checkpoint, then the resumed run's: the uninterrupted run's rows,
        # value for value (the abandoned rows are gone, their steps logged again)
        assert got == full
    else:
        assert got == [r for r in full if float(r["step"]) >= step]
        assert read_rows(runs["killed"] / "metrics.csv") == runs["rows_before"]  # untouched
