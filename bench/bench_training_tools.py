"""Long-tailed shapes classification (one class 50x rarer in train): per-class test recall without
and with class weights / the class-balanced sampler, EMA vs none, and TTA vs none (metric, cost).

Usage: python bench/bench_training_tools.py [--epochs 4] [--out DIR] (32 px images, batch 32). Each variant is a CLI run
(as a user runs it) on the same long-tailed COCO copy of the generated shapes data; recall per
class is computed here from the best checkpoint on the (balanced) test split.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from common import write_table

RARE = 50  # the first category keeps 1 in RARE of its training images


def long_tailed_copy(data_dir: Path, out: Path) -> Path:
    """A COCO copy of shapes classification whose first category is RARE x rarer in train."""
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    dm = DATASETS.build({"name": "shapes", "root": str(data_dir / "shapes"), "num_workers": 0}, task="classification")  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    source = Path(dm.annotation_file("train")).parent.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        coco = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        if split == "train":
            rare = coco["categories"][0]["id"]
            rare_images = sorted({a["image_id"] for a in coco["annotations"] if a["category_id"] == rare})  # fmt: skip
            drop = set(rare_images) - set(rare_images[::RARE])
            coco["images"] = [im for im in coco["images"] if im["id"] not in drop]
            coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in drop]
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        if not (out / split).exists():
            os.symlink(source / split, out / split)
    return out


def run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "visionkit", *args], cwd=cwd, capture_output=True, text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"visionkit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def recall_per_class(ckpt: str, root: Path) -> list[float]:
    from visionkit import runner
    from visionkit.registries import DATASETS

    task = runner.load_task_from_checkpoint(ckpt).eval()
    dm = DATASETS.build({"name": "coco", "root": str(root), "num_workers": 0, "image_size": 32}, task="classification")  # fmt: skip
    dm.prepare_data()
    dm.setup("test")
    k = task.num_classes
    confusion = torch.zeros(k, k, dtype=torch.long)
    with torch.no_grad():
        for images, labels in dm.test_dataloader():
            pred = task(images).argmax(1)
            confusion += torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
    return (confusion.diag().float() / confusion.sum(1).clamp(min=1)).tolist()


def tta_table(best: str, common: list[str], out: Path) -> None:
    """`test` of ``best`` without TTA, with tta=hflip and tta=multiscale: accuracy and wall."""
    tta_rows = []
    for tta in ("none", "hflip", "multiscale"):
        run_dir = out / f"test_tta_{tta}"
        choice = [] if tta == "none" else [f"tta={tta}"]  # (a group cannot be set to null)
        seconds = run(["test", f"ckpt_path={best}", *common, *choice, f"hydra.run.dir={run_dir}"], cwd=out)  # fmt: skip
        res = json.loads((run_dir / "results.json").read_text())
        tta_rows.append([tta, f"{res['test/acc']:.3f}", seconds])
    base = tta_rows[0][2]
    write_table(
        "training_tools_tta",
        "TTA on the long-tailed run's best checkpoint (test split, 400 images)",
        ["tta", "test acc", "test command wall (ratio)"],
        [[t, acc, f"{s:.0f} s ({s / base:.2f}x)"] for t, acc, s in tta_rows],
        "Wall of the whole `test` command (start-up included); machine shared with other jobs.",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_training_tools"))
    a = parser.parse_args()
    out = a.out.resolve()
    data_dir = Path(os.environ.get("VISIONKIT_DATA_DIR", "data")).resolve()
    root = long_tailed_copy(data_dir, out / "shapes_lt")
    common = ["data=coco", f"data.root={root}", "data.image_size=32", "data.batch_size=32", f"trainer.max_epochs={a.epochs}",
              "trainer.accelerator=cpu", "callbacks.progress=null", "data.num_workers=2"]  # fmt: skip
    variants = {
        "none": [],
        "class_weights=inverse": ["task.class_weights=inverse"],
        "sampler=class_balanced": ["data.sampler=class_balanced"],
        "callbacks=ema": [
            "callbacks=ema",
            "callbacks.ema.decay=0.99",
            "callbacks.ema.warmup_tau=50",
        ],
    }
    rows, results = [], {}
    for name, extra in variants.items():
        run_dir = out / name.replace("=", "_")
        seconds = run([*common, *extra, f"hydra.run.dir={run_dir}"], cwd=out)
        res = json.loads((run_dir / "results.json").read_text())
        recall = recall_per_class(res["best_checkpoint"], root)
        results[name] = res
        metrics = sorted(k for k in res if k.startswith("val/acc"))
        rows.append([name, f"{recall[0]:.3f}", f"{min(recall[1:]):.3f}", f"{res['test/acc']:.3f}",
                     f"{res.get('best_score', {}).get('val/acc', float('nan')):.3f}", res.get("best_epoch"),
                     f"{seconds:.0f} s"])  # fmt: skip
        print(name, recall, metrics, flush=True)
    write_table(
        "training_tools_imbalance",
        f"Long-tailed shapes classification (circle {RARE}x rarer in train), {a.epochs} epochs",
        [
            "variant",
            "rare-class test recall",
            "lowest other recall",
            "test acc",
            "best val acc",
            "best epoch",
            "wall",
        ],
        rows,
        "Machine shared with other jobs (2 cores): wall times are indicative only.",
    )
    tta_table(results["none"]["best_checkpoint"], common, out)


if __name__ == "__main__":
    main()
