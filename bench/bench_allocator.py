"""glibc's malloc keeping freed memory (visionkit.allocator, the default) vs as the system sets it
(``VISIONKIT_MALLOC=system``): wall and CPU seconds and page faults of the same jobs.

    .venv/bin/python bench/bench_allocator.py [--rounds 3] [--threads 2]

Jobs, each a fresh process as a user runs it: short CPU trainings through ``python -m visionkit``
(whole process, loader workers included), and batched prediction of 400 PNGs through
``visionkit.load(...).predict`` (the predict calls only, three passes). The two settings run
alternately in each round; each ratio is the median of the rounds' ratios of the two runs timed one
after the other (this virtual machine switches between a fast and a slower mode).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_table

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["trainer.max_epochs=1", "trainer.limit_val_batches=0", "test_after_fit=false", "callbacks.progress=null", "trainer.accelerator=cpu"]  # fmt: skip
JOBS = {
    "train detection (Faster R-CNN, 40 batches)": [
        "task=detection",
        "trainer.limit_train_batches=40",
    ],
    "train classification (1 epoch, 2000 images)": ["task=classification"],
}
# the predict job: its own timing of three batched passes (seconds, minor faults) on stdout
PREDICT = """
import json, resource, sys, time
from pathlib import Path
import torch
torch.set_num_threads({threads})
import visionkit
model = visionkit.load(sys.argv[1])
paths = sorted(Path(sys.argv[2]).glob("*.png"))
model.predict(paths[:32], batch_size=32)
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(3):
    model.predict(paths, batch_size=32)
after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - start
print(json.dumps({{"wall": wall, "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
                  "sys": after.ru_stime - before.ru_stime, "faults": after.ru_minflt - before.ru_minflt}}))
"""


def measured(args: list[str], env: dict[str, str]) -> dict[str, float]:
    """A job's figures: the predict job reports its own; a training is timed whole: wall, CPU
    (user + system) and system seconds and minor page faults of the process and the children it
    waited for (its loader workers)."""
    import resource

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args[:3])} exited {proc.returncode}: {proc.stderr[-2000:]!r}"
        )
    if args[1] == "-c":
        return json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall": wall,
        "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
        "sys": after.ru_stime - before.ru_stime,
        "faults": after.ru_minflt - before.ru_minflt,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args()
    import bench_predict

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(OMP_NUM_THREADS=str(opts.threads), PYTHONPATH=str(ROOT))
    settings = {"keep": {**env, "VISIONKIT_MALLOC": "keep"}, "system": {**env, "VISIONKIT_MALLOC": "system"}}  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        jobs = {name: [sys.executable, "-m", "visionkit", *TRAIN, *o, f"hydra.run.dir={root / 'run'}"] for name, o in JOBS.items()}  # fmt: skip
        (root / "pictures").mkdir()
        bench_predict.pictures(root / "pictures", 400)
        ckpt = bench_predict.build("classification", root)
        jobs["predict classification, 400 images, batch 32 (x3)"] = [sys.executable, "-c", PREDICT.format(threads=opts.threads), str(ckpt), str(root / "pictures")]  # fmt: skip
        for name, args in jobs.items():
            figures: dict[str, list[dict[str, float]]] = {k: [] for k in settings}
            for _ in range(opts.rounds):
                for setting, environ in settings.items():
                    figures[setting].append(measured(args, environ))
            keep, system = figures["keep"], figures["system"]
            med = {s: {k: statistics.median(f[k] for f in figures[s]) for k in keep[0]} for s in settings}  # fmt: skip
            ratio = {k: statistics.median(b[k] / a[k] for a, b in zip(keep, system, strict=True)) for k in ("wall", "cpu")}  # fmt: skip
            rows.append([name, med["system"]["wall"], med["keep"]["wall"], med["system"]["cpu"], med["keep"]["cpu"], med["system"]["sys"], med["keep"]["sys"], med["system"]["faults"], med["keep"]["faults"], ratio["wall"], ratio["cpu"]])  # fmt: skip
            print(rows[-1], flush=True)
    columns = ["job", "wall s system", "wall s keep", "CPU s system", "CPU s keep", "sys s system", "sys s keep", "page faults system", "page faults keep", "system / keep (wall)", "system / keep (CPU)"]  # fmt: skip
    write_table(
        "bench_allocator",
        "glibc's malloc as the system sets it vs keeping freed memory (visionkit's default)",
        columns,
        rows,
        f"Each job a fresh process, {opts.threads} threads; figures the median of {opts.rounds} rounds "
        "(ratios: the median of each round's ratio of its two runs, timed one after the other). "
        "Trainings: the whole `python -m visionkit` process and its loader workers; predict: its "
        "three batched passes only. CPU s: user + system.",
    )


if __name__ == "__main__":
    main()
