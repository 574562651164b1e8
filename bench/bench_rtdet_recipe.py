"""rtdet training recipes compared at EQUAL EPOCHS (equal optimizer steps) on bench_realtime's split.

Timing on a shared machine is noisy; test AP after the same number of steps is not. Each recipe is
one override set of ``python -m visionkit train`` (added to ``--base``, by default ``experiment=rtdet_n``)
trained for ``--epochs`` epochs on the shapes detection split of bench_realtime.py (2000 train /
400 val / 400 test, 64 px, batch 16), validated once at the end (so the tested checkpoint is the
last), and tested by pycocotools on its test detections. ``--jobs`` runs that many trainings at
once (each with ``--threads`` torch threads).

    PYTHONPATH=. python bench/bench_rtdet_recipe.py --epochs 17 --seeds 1 2 \
        --recipe "current=" --recipe "ema=callbacks=ema"

Results: bench/results/rtdet_recipe.md (and .json beside it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from bench_realtime import BATCH, IMAGE_SIZE, coco_ap  # noqa: E402


def write_split(work: Path, args: argparse.Namespace) -> Path:
    """The shapes detection split in COCO layout (bench_realtime's, without the YOLO copy)."""
    from visionkit.data.shapes.datamodule import ShapesDataModule

    dm = ShapesDataModule(
        task="detection", root=str(work / "shapes"), image_size=IMAGE_SIZE,
        num_train=args.num_train, num_val=args.num_val, num_test=args.num_test,
    )  # fmt: skip
    dm.prepare_data()
    return dm.data_root()


def train(name: str, overrides: list[str], seed: int, coco: Path, work: Path, args: argparse.Namespace) -> dict:  # fmt: skip
    """One training run; its test AP50 / AP by pycocotools."""
    out = work / f"{name}_seed{seed}"
    cmd = [
        sys.executable, "-m", "visionkit", "train", *shlex.split(args.base), *overrides,
        "data=coco", f"data.root={coco}", f"data.image_size={IMAGE_SIZE}", f"data.batch_size={BATCH}",
        "data.num_workers=0", "data.verify_images=none", f"seed={seed}",
        f"trainer.max_epochs={args.epochs}", f"trainer.check_val_every_n_epoch={args.epochs}",
        "trainer.accelerator=cpu", "callbacks.progress=null", "callbacks.learning_curves=null",
        "callbacks.overlays=null", "error_analysis=null", f"hydra.run.dir={out}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT))}  # fmt: skip
    print("+", shlex.join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"recipe": name, "seed": seed, "error": proc.stderr[-1500:]}
    results = json.loads((out / "results.json").read_text())
    ap50, ap = coco_ap(coco / "annotations" / "instances_test.json", results["test/detections"])
    row = {"recipe": name, "seed": seed, "ap50": ap50, "ap": ap}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", action="append", help="NAME=OVERRIDES (space separated; may be empty; default: the experiment as shipped and with the assigner's former topk 10)")  # fmt: skip
    parser.add_argument("--base", default="experiment=rtdet_n", help="overrides of every recipe")
    parser.add_argument("--epochs", type=int, default=17)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=400)
    parser.add_argument("--num-test", type=int, default=400)
    parser.add_argument("--work", type=Path, help="working folder (default: a new temporary one)")
    parser.add_argument("--name", default="rtdet_recipe", help="results file name")
    args = parser.parse_args()
    given = args.recipe or ["shipped=", "topk10=model.head.topk=10"]
    recipes = [(r.split("=", 1)[0], shlex.split(r.split("=", 1)[1]) if "=" in r else []) for r in given]  # fmt: skip
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_rtdet_recipe_"))
    work.mkdir(parents=True, exist_ok=True)
    coco = write_split(work, args)
    jobs = [(n, o, s) for s in args.seeds for n, o in recipes]
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(lambda j: train(*j, coco, work, args), jobs))
    table = []
    for name, overrides in recipes:
        mine = [r for r in rows if r["recipe"] == name and "error" not in r]
        failed = [r for r in rows if r["recipe"] == name and "error" in r]
        aps = [f"{r['ap50']:.3f} / {r['ap']:.3f}" for r in mine]
        mean = sum(r["ap"] for r in mine) / len(mine) if mine else float("nan")
        table.append([name, f"`{shlex.join(overrides)}`", ", ".join(aps) + (f" ({len(failed)} failed)" if failed else ""), f"{mean:.3f}"])  # fmt: skip
    from common import write_table

    cmd = "PYTHONPATH=. python bench/bench_rtdet_recipe.py " + shlex.join(sys.argv[1:])
    notes = (
        f"`{args.base}` plus each recipe, {args.epochs} epochs on shapes detection ({args.num_train} "
        f"train / {args.num_val} val / {args.num_test} test images, {IMAGE_SIZE} px, batch {BATCH}), "
        f"seeds {args.seeds}, {args.threads} torch thread(s) per run, validated after the last epoch "
        "only; test AP50 / AP by pycocotools on each run's test detections.\n\n"
        f"Command: `{cmd}`"
    )
    write_table(args.name, "rtdet recipes at equal epochs", ["recipe", "overrides", "test AP50 / AP per seed", "mean AP"], table, notes)  # fmt: skip
    (BENCH / "results" / f"{args.name}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
