"""Sweeps on one machine: a 4-job grid run sequentially vs with joblib (2 workers), and an Optuna
search of 8 trials with the default pruner vs without pruning. Writes bench/results/sweep.md.

Needs `visionkit[sweep]`. Every job trains the shapes classifier briefly (3 epochs of 8 batches);
the figures are wall times of whole `python -m visionkit --multirun` commands, start-up included.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import python, write_table
from omegaconf import OmegaConf

JOB = ["trainer.max_epochs=3", "trainer.limit_train_batches=8", "trainer.limit_val_batches=4",
       "test_after_fit=false", "callbacks.progress=null", "trainer.accelerator=cpu"]  # fmt: skip


def sweep(work: Path, name: str, *overrides: str) -> tuple[float, Path]:
    """Wall time of one multirun, and its sweep directory."""
    env = {**os.environ, "VISIONKIT_DATA_DIR": str(work / "data"), "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    subprocess.run(
        [python(), "-m", "visionkit", "--multirun", *JOB, *overrides, f"hydra.sweep.dir={name}"],
        cwd=work, env=env, check=True, capture_output=True,
    )  # fmt: skip
    return time.perf_counter() - start, work / name


def main() -> None:
    work = Path(tempfile.mkdtemp())
    sweep(work, "warm-up", "trainer.max_epochs=1")  # generates the data once
    grid = ["optimizer.lr=1e-3,3e-3", "model.act=relu,hswish"]
    sequential, _ = sweep(work, "grid-seq", *grid)
    parallel, _ = sweep(work, "grid-joblib", *grid, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")  # fmt: skip
    rows = []
    for label, extra in (("median pruner (default)", []), ("no pruning", ["hydra.sweeper.pruner=null"])):  # fmt: skip
        seconds, root = sweep(work, f"optuna-{len(rows)}", "hparams_search=classification",
                              "hydra.sweeper.n_trials=8", *extra)  # fmt: skip
        summary = OmegaConf.load(root / "optimization_results.yaml")
        rows.append([label, summary.trials.complete, summary.trials.pruned, seconds, summary.get("best_value")])  # fmt: skip
    note = (
        "2 CPU cores shared with other jobs while measured (a noisy machine): compare within a "
        "table only. Each job: shapes classification, simple_cnn, 3 epochs of 8 batches, "
        "data.num_workers=2 (default); run with OMP_NUM_THREADS=1 (one thread per job)."
    )
    text = write_table(
        "sweep",
        "4-job grid (optimizer.lr x model.act): sequential vs joblib, 2 workers",
        ["sequential s", "joblib (2) s", "ratio joblib / sequential"],
        [[sequential, parallel, parallel / sequential]],
        note,
    )
    text += "\n" + write_table(
        "sweep_optuna",
        "Optuna, hparams_search=classification, 8 trials (TPE, seed 42)",
        ["pruning", "completed", "pruned", "wall s", "best val/acc"],
        rows,
    )
    (Path(__file__).resolve().parent / "results" / "sweep.md").write_text(text)
    (Path(__file__).resolve().parent / "results" / "sweep_optuna.md").unlink()


if __name__ == "__main__":
    main()
