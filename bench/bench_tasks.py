"""Quality and speed of each task's default config on the embedded shapes data (one task per run).

    .venv/bin/python bench/bench_tasks.py --task semantic_segmentation [overrides...]

Trains with the task's defaults through the same code path as the CLI, then reports the quality
metric against the issue's target (ratio), train images/s (training batches only) and inference
images/s (eval-mode forward on the test split, batch as configured) with wall times. Rows are kept
per task in bench/results/bench_tasks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, compose, write_table

TARGETS = {  # task -> (results.json key, target)
    "semantic_segmentation": ("test/mIoU", 0.85),
    "detection": ("test/map_50", 0.90),
    "instance_segmentation": ("test/segm_map_50", 0.85),
}
DATA_DIR = os.environ.get("VISIONKIT_DATA_DIR", str(Path(__file__).resolve().parents[1] / "data"))


class ThroughputMeter(pl.Callback):
    """Counts training images and the time spent in training batches only; writes ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.images, self.seconds, self._t0 = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seconds += time.perf_counter() - self._t0
        self.images += len(batch[0])

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.path).write_text(json.dumps({"images": self.images, "seconds": self.seconds}))


def inference_rate(ckpt: str, cfg) -> float:
    """Images per second of eval-mode forward passes over the test split."""
    from visionkit import runner

    task = runner.load_task_from_checkpoint(ckpt).eval()
    dm = runner.build_datamodule(cfg, task_name=task.task_name)
    n, seconds = 0, 0.0
    with torch.no_grad():
        for images, _ in dm.test_dataloader():
            start = time.perf_counter()
            task(images)
            seconds += time.perf_counter() - start
            n += len(images)
    return n / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", required=True, choices=sorted(TARGETS))
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix=f"bench_{args.task}_"))
    meter = out / "throughput.json"
    overrides = [
        f"task={args.task}",
        f"paths.data_dir={DATA_DIR}",
        *args.overrides,
    ]
    cli = [
        sys.executable, "-m", "visionkit", "train", *overrides, f"hydra.run.dir={out}",
        "callbacks.progress=null", "+callbacks.meter._target_=bench_tasks.ThroughputMeter",
        f"+callbacks.meter.path={meter}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    start = time.perf_counter()
    subprocess.run(cli, check=True, env=env)
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    measured = json.loads(meter.read_text())
    cfg = compose([*overrides, f"hydra.run.dir={out}", f"paths.output_dir={out}"])
    key, target = TARGETS[args.task]
    value = results.get(key)
    infer = inference_rate(results["best_checkpoint"], cfg)
    train_rate = measured["images"] / max(measured["seconds"], 1e-9)
    row = [
        args.task,
        " ".join(args.overrides) or "defaults",
        key,
        value,
        target,
        (value or 0.0) / target,
        train_rate,
        infer,
        wall / 60,
        torch.get_num_threads(),
    ]
    header = ["task", "overrides", "metric", "value", "target", "value/target", "train img/s", "infer img/s", "wall min", "threads"]  # fmt: skip
    rows = [*_previous_rows(args.task, " ".join(args.overrides) or "defaults"), row]
    notes = (
        "Default config of each task on the shapes data, CPU (2 cores shared with other jobs: "
        "throughput is indicative). value/target >= 1 meets the issue's quality target."
    )
    write_table("bench_tasks", "Tasks: quality and speed (defaults)", header, rows, notes)
    (out / "bench.json").write_text(json.dumps({"row": row}, default=str))


def _previous_rows(task: str, overrides: str) -> list[list[str]]:
    """Rows of other tasks (or other overrides) already in the results file."""
    path = RESULTS / "bench_tasks.md"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 10 or cells[0] in ("task",) or re.fullmatch(r"-+", cells[0]):
            continue
        if cells[0] == task and cells[1] == overrides:
            continue
        rows.append(cells)
    return rows


if __name__ == "__main__":
    main()
