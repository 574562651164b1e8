"""Training tools on long-tailed and plain shapes data, each variant a CLI run as a user runs it.

* ``imbalance`` (classification, one class 50x rarer in train): per-class test recall without and
  with class weights / the class-balanced sampler / EMA; ``tta``: TTA vs none (metric, cost);
* ``detection`` (shapes detection, the circle in 1 of ``RARE_DET`` of its training images): per-class
  test AP of Faster R-CNN without / with ``data.sampler=repeat_factor`` and with mosaic (its
  AP_small against the same baseline; ``--det-seeds``: that pair again with other seeds),
  RetinaNet and FCOS without / with ``task.class_weights``;
* ``ema``: classification runs with ``callbacks=ema`` and a checkpoint per epoch, each epoch's
  raw and averaged weights validated (the raw trajectory is exactly a run without EMA: EMA does
  not touch training), over several seeds: best val acc and its epoch-to-epoch variation.

Usage: python bench/bench_training_tools.py [--parts imbalance tta detection ema] [--epochs 4]
[--out DIR]. Runs are single-threaded (OMP_NUM_THREADS=1), two at a time: the machine is shared.
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
RARE_DET = 20  # detection: the circle keeps 1 in RARE_DET of the training images that have one
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def shapes_source(data_dir: Path, task: str, **spec: object) -> Path:
    """The generated shapes data (COCO files) of ``task`` with ``spec``'s generation keys."""
    from visionkit.plugins import load_builtins
    from visionkit.registries import DATASETS

    load_builtins()
    dm = DATASETS.build({"name": "shapes", "root": str(data_dir / "shapes"), "num_workers": 0, **spec}, task=task)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    return Path(dm.annotation_file("train")).parent.parent


def long_tailed_copy(source: Path, out: Path, rare: int = RARE) -> Path:
    """A COCO copy of ``source`` whose training split keeps 1 in ``rare`` of the images that hold
    the first category (val and test unchanged)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(exist_ok=True)
    for split in ("train", "val", "test"):
        coco = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        if split == "train":
            first = coco["categories"][0]["id"]
            rare_images = sorted({a["image_id"] for a in coco["annotations"] if a["category_id"] == first})  # fmt: skip
            drop = set(rare_images) - set(rare_images[::rare])
            coco["images"] = [im for im in coco["images"] if im["id"] not in drop]
            coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in drop]
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
        if not (out / split).exists():
            os.symlink(source / split, out / split)
    return out


def train_counts(root: Path) -> dict[str, list[int]]:
    """Per category name: [training images holding it, training instances]."""
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    images = {n: set() for n in names.values()}
    counts = dict.fromkeys(names.values(), 0)
    for a in coco["annotations"]:
        images[names[a["category_id"]]].add(a["image_id"])
        counts[names[a["category_id"]]] += 1
    return {n: [len(images[n]), counts[n]] for n in names.values()}


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "visionkit", *args]


def run(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command(args), cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"visionkit {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def run_parallel(jobs: dict[str, list[str]], cwd: Path, at_once: int = 2) -> dict[str, float]:
    """CLI runs ``jobs`` (name -> args), ``at_once`` at a time, one thread each: name -> wall s."""
    env = {**os.environ, **THREADS}
    pending, running, walls = list(jobs.items()), {}, {}
    for name, args in list(pending):  # a finished run (results.json in its hydra.run.dir) is kept
        done = [a.split("=", 1)[1] for a in args if a.startswith("hydra.run.dir=")]
        if done and (Path(done[0]) / "results.json").is_file() and os.environ.get("BENCH_REUSE"):
            pending.remove((name, args))  # its wall: from the composed config to results.json
            walls[name] = (Path(done[0]) / "results.json").stat().st_mtime - (Path(done[0]) / "config.yaml").stat().st_mtime  # fmt: skip
    while pending or running:
        while pending and len(running) < at_once:
            name, args = pending.pop(0)
            log = open(cwd / f"{name}.log", "w")  # noqa: SIM115 (closed when the run ends)
            proc = subprocess.Popen(command(args), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
            running[name] = (proc, log, time.perf_counter())
        time.sleep(2)
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[name]
            if proc.returncode:
                tail = (cwd / f"{name}.log").read_text()[-3000:]
                raise SystemExit(f"run {name} failed ({' '.join(jobs[name])}):\n{tail}")
            walls[name] = time.perf_counter() - start
            print(f"{name}: {walls[name]:.0f} s", flush=True)
    return walls


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


DET = {"num_train": 600, "num_val": 200, "num_test": 200, "image_size": 64}  # shapes generation
REPEAT_THRESHOLD = 0.3  # LVIS's t, for 6 categories (LVIS's 0.001 is for ~1200): circle ~3.6x


def detection_tables(data_dir: Path, out: Path, epochs: int, only: list[str] | None = None, extra_seeds: tuple[int, ...] = ()) -> dict[str, dict]:  # fmt: skip
    """Long-tailed shapes detection: per-class test AP@0.5 of Faster R-CNN without / with
    repeat_factor / with mosaic, RetinaNet and FCOS without / with sqrt_inverse class weights; test
    AP_small of mosaic vs none. Returns each run's results.json."""
    root = long_tailed_copy(shapes_source(data_dir, "detection", **DET), out / "shapes_det_lt", RARE_DET)  # fmt: skip
    common = ["task=detection", "data=coco", f"data.root={root}", "data.image_size=64", "data.batch_size=8",
              f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu", "callbacks.progress=null",
              "callbacks.overlays=null", "callbacks.learning_curves=null", "data.num_workers=0"]  # fmt: skip
    retina = ["model/head=retinanet"]
    variants = {
        "frcnn": [],
        "frcnn_repeat_factor": [
            f"data.sampler={{name:repeat_factor,threshold:{REPEAT_THRESHOLD}}}"
        ],
        "frcnn_mosaic": ["data.train_transforms=[{name:mosaic,p:0.5},{name:hflip}]"],
        "retinanet": retina,
        "retinanet_class_weights": [*retina, "task.class_weights=sqrt_inverse"],
        "fcos": ["model/head=fcos"],
        "fcos_class_weights": ["model/head=fcos", "task.class_weights=sqrt_inverse"],
    }
    for seed in extra_seeds:  # the mosaic comparison again with other seeds (data order, init)
        variants[f"frcnn_seed{seed}"] = [f"seed={seed}"]
        variants[f"frcnn_mosaic_seed{seed}"] = [*variants["frcnn_mosaic"], f"seed={seed}"]
    variants = {n: v for n, v in variants.items() if not only or n in only}
    jobs = {n: [*common, *extra, f"hydra.run.dir={out / n}"] for n, extra in variants.items()}
    walls = run_parallel(jobs, out, at_once=len(jobs))
    results = {n: json.loads((out / n / "results.json").read_text()) for n in variants}
    counts = train_counts(root)
    names = list(counts)
    rows = []
    for n in variants:
        ap = results[n]["test/per_class_ap"]
        ap = ap.get("bbox", ap)  # instance segmentation: per IoU type
        ap50 = [ap[c]["ap50"] for c in names]
        rows.append([n, f"{ap50[0]:.3f}", f"{min(ap50[1:]):.3f}", f"{sum(ap50[1:]) / len(ap50[1:]):.3f}",
                     f"{results[n]['test/map_50']:.3f}", f"{results[n]['test/map_small']:.3f}",
                     f"{results[n]['test/map_medium']:.3f}", f"{walls[n]:.0f} s"])  # fmt: skip
    title = f"Long-tailed shapes detection (circle in 1 of {RARE_DET} of its training images), {epochs} epochs, 64 px"  # fmt: skip
    header = ["variant", "circle test AP50", "lowest other AP50", "mean other AP50", "test mAP50", "test AP_small", "test AP_medium", "wall"]  # fmt: skip
    write_table(
        "training_tools_detection",
        title,
        header,
        rows,
        "Training images / instances per class: "
        + ", ".join(f"{c} {i}/{k}" for c, (i, k) in counts.items())
        + f". repeat_factor threshold {REPEAT_THRESHOLD}; mosaic p=0.5 then hflip; batch 8; one "
        "thread per run, 2-5 runs at a time on a 2-core machine shared with other jobs (walls vary 4x "
        "with its load: indicative only). frcnn_*seed1: seed 1, the others seed 42.",
    )
    return results


def val_accuracy(task: object, loader: object) -> float:
    """Top-1 accuracy of a classification task over a loader."""
    right = total = 0
    with torch.no_grad():
        for images, labels in loader:
            right += int((task(images).argmax(1) == labels).sum())
            total += len(labels)
    return right / total


def ema_curves(run_dir: Path, shapes_root: Path) -> tuple[list[float], list[float]]:
    """Val accuracy after each epoch of a ``callbacks=ema`` run, raw weights and the average, from
    the per-epoch checkpoints (``state_dict``: average; ``current_model_state``: raw)."""
    from visionkit import runner
    from visionkit.registries import DATASETS

    raw, avg, dm = [], [], None
    for path in sorted((run_dir / "epochs").glob("e*.ckpt"), key=lambda p: int(p.stem[1:])):
        task = runner.load_task_from_checkpoint(path).eval()
        if dm is None:
            dm = DATASETS.build({"name": "shapes", "root": str(shapes_root), "image_size": 32, "num_workers": 0}, task="classification")  # fmt: skip
            dm.prepare_data()
            dm.setup("fit")
        avg.append(val_accuracy(task, dm.val_dataloader()))
        state = torch.load(path, map_location="cpu", weights_only=True)["current_model_state"]
        task.load_state_dict(state)
        raw.append(val_accuracy(task, dm.val_dataloader()))
    return raw, avg


def ema_table(data_dir: Path, out: Path, epochs: int, seeds: list[int]) -> None:
    """Classification (shapes, 32 px) with EMA, per seed: val acc per epoch of the raw weights (=
    the run without EMA) and of the average; best, spread over the last half of the epochs."""
    epoch_ckpt = ("+callbacks.each_epoch={_target_:visionkit.ModelCheckpoint,dirpath:${paths.output_dir}/epochs,"
                  "filename:'e{epoch}',monitor:null,mode:max,save_top_k:-1,every_n_epochs:1,auto_insert_metric_name:false}")  # fmt: skip
    common = ["data.image_size=32", f"trainer.max_epochs={epochs}", "trainer.accelerator=cpu", "callbacks=ema",
              "callbacks.progress=null", "callbacks.learning_curves=null", "data.num_workers=0", epoch_ckpt]  # fmt: skip
    jobs = {f"ema_seed{s}": [*common, f"seed={s}", f"hydra.run.dir={out / f'ema_seed{s}'}"] for s in seeds}  # fmt: skip
    run_parallel(jobs, out)
    rows, curves = [], {}
    late = slice(epochs // 2, None)
    for s in seeds:
        run_dir = out / f"ema_seed{s}"
        raw, avg = ema_curves(run_dir, data_dir / "shapes")
        curves[s] = {"raw": raw, "ema": avg}
        for name, c in (("none (raw weights)", raw), ("ema", avg)):
            t = torch.tensor(c[late])
            steps = torch.tensor(c[late]).diff().abs().mean()
            rows.append([s, name, f"{max(c):.4f}", 1 + c.index(max(c)), f"{t.std():.4f}", f"{steps:.4f}",
                         " ".join(f"{v:.3f}" for v in c)])  # fmt: skip
    (out / "ema_curves.json").write_text(json.dumps(curves))
    title = f"EMA vs none: shapes classification (32 px, default settings), {epochs} epochs, seeds {seeds}"  # fmt: skip
    header = ["seed", "weights", "best val acc", "best epoch", f"std of val acc, epochs {late.start + 1}-{epochs}", "mean |epoch-to-epoch change|", "val acc per epoch"]  # fmt: skip
    write_table(
        "training_tools_ema",
        title,
        header,
        rows,
        "One run per seed with callbacks=ema (decay 0.999, warm-up 200) and a checkpoint per epoch "
        "(its mode:max only keeps its state key apart from last.ckpt's): its raw weights are exactly the run without EMA (EMA does not touch training), so the two "
        "curves of a seed are paired. Val: 400 images.",
    )


def imbalance_table(data_dir: Path, out: Path, epochs: int) -> tuple[str, list[str]]:
    """Long-tailed shapes classification: per-class test recall of each variant; returns the
    first run's best checkpoint and the common arguments (for the TTA part)."""
    root = long_tailed_copy(shapes_source(data_dir, "classification"), out / "shapes_lt")
    common = ["data=coco", f"data.root={root}", "data.image_size=32", "data.batch_size=32", f"trainer.max_epochs={epochs}",
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
        f"Long-tailed shapes classification (circle {RARE}x rarer in train), {epochs} epochs",
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
    return results["none"]["best_checkpoint"], common


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--parts", nargs="+", default=["imbalance", "tta", "detection", "ema"])
    parser.add_argument("--epochs", type=int, default=4, help="imbalance part")
    parser.add_argument("--det-epochs", type=int, default=6)
    parser.add_argument("--det-variants", nargs="*", help="detection part: these variants only")
    parser.add_argument("--det-seeds", type=int, nargs="*", default=[], help="frcnn, mosaic again")
    parser.add_argument("--ema-epochs", type=int, default=8)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_training_tools"))
    a = parser.parse_args()
    out = a.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ.get("VISIONKIT_DATA_DIR", "data")).resolve()
    if "imbalance" in a.parts or "tta" in a.parts:
        best, common = imbalance_table(data_dir, out, a.epochs)
        if "tta" in a.parts:
            tta_table(best, common, out)
    if "detection" in a.parts:
        detection_tables(data_dir, out, a.det_epochs, a.det_variants, tuple(a.det_seeds))
    if "ema" in a.parts:
        ema_table(data_dir, out, a.ema_epochs, a.seeds)


if __name__ == "__main__":
    main()
