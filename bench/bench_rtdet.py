"""Per-image cost of the real-time detector (rtdet) against the default Faster R-CNN, in one process.

Training images/s (forward, loss/assignment, backward, AdamW step on batches already in memory),
inference images/s at batch 1 and 16, and a per-step profile (forward, loss, backward, optimizer),
on ``data=shapes task=detection`` (64 px), ``--threads`` torch threads. Prints a table and saves
bench/results/rtdet_speed.md; ``--learn SECONDS``: val mAP after that many CPU seconds of training
(bench/results/rtdet_learning.md). Summary and reading: bench/results/rtdet.md.

    python bench/bench_rtdet.py --threads 1
    python bench/bench_rtdet.py --threads 1 --learn 150 --val-images 200
    python bench/bench_rtdet.py --threads 1 --learn 150 --val-images 200 --models rtdet_s --name _s
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import compose, write_table

from visionkit.inference import for_prediction

MODELS = {
    "fasterrcnn (default)": ["task=detection"],
    "rtdet_n": ["experiment=rtdet_n"],
    "rtdet_n strides 4/8/16": ["experiment=rtdet_n", "model.backbone.num_stages=3"],
    "rtdet_s": ["experiment=rtdet_s"],
}


def build(overrides: list[str]):
    from visionkit import runner

    cfg = compose(["data.num_workers=0", *overrides])
    dm = runner.build_datamodule(cfg)
    return cfg, dm, runner.build_task(cfg, dm)


def batches(dm, n: int) -> list:
    out = []
    for batch in dm.train_dataloader():
        out.append(batch)
        if len(out) == n:
            return out
    return out


def train_speed(task, data: list, repeats: int) -> tuple[float, dict[str, float]]:
    """Images/s of full training steps and seconds per step spent in each phase."""
    from visionkit.tasks.detection import drop_crowd

    task.train()
    opt = torch.optim.AdamW(task.parameters(), lr=1e-3)
    phases = {"forward+loss": 0.0, "backward": 0.0, "optimizer": 0.0}
    images_seen, start = 0, None
    for r in range(repeats + 1):
        for images, targets in data:
            if r == 1 and start is None:  # first pass is warm-up
                start = time.perf_counter()
                phases = dict.fromkeys(phases, 0.0)
            t0 = time.perf_counter()
            losses = task.head(list(images), [drop_crowd(t) for t in targets], task.features)
            loss = sum(losses.values())
            t1 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            opt.step()
            t3 = time.perf_counter()
            phases["forward+loss"] += t1 - t0
            phases["backward"] += t2 - t1
            phases["optimizer"] += t3 - t2
            if r >= 1:
                images_seen += len(images)
    elapsed = time.perf_counter() - start
    steps = repeats * len(data)
    return images_seen / elapsed, {k: 1000 * v / steps for k, v in phases.items()}


@torch.no_grad()
def infer_speed(task, images: list[torch.Tensor], batch: int, seconds: float = 3.0) -> float:
    """Eval-mode images/s, post-processing included, of the model ``visionkit.load`` would give
    (a folded, channels-last copy: the task itself goes on training)."""
    task = for_prediction(task)
    chunks = [images[i : i + batch] for i in range(0, len(images) - batch + 1, batch)]
    task(chunks[0])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for c in chunks:
            task(c)
            n += len(c)
    return n / (time.perf_counter() - start)


def train_for(task, dm, cpu_seconds: float, lr: float) -> int:
    """Train for ``cpu_seconds`` of this process's CPU time (data loading included; fair on a
    shared machine), AdamW at ``lr`` after a 50-step linear warm-up; -> images seen."""
    from visionkit.tasks.detection import drop_crowd

    task.train()
    opt = torch.optim.AdamW(task.parameters(), lr=lr, weight_decay=0.01)
    seen, step, start = 0, 0, time.process_time()
    while time.process_time() - start < cpu_seconds:
        for images, targets in dm.train_dataloader():
            for group in opt.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / 50)
            losses = task.head(list(images), [drop_crowd(t) for t in targets], task.features)
            opt.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            opt.step()
            seen, step = seen + len(images), step + 1
            if time.process_time() - start >= cpu_seconds:
                break
    return seen


def learn(task, dm, cpu_seconds: float, val_images: int, lr: float) -> tuple[int, float, float]:
    """:func:`train_for`, then -> (images seen, val mAP@0.5, val mAP) on the first
    ``val_images`` validation images."""
    from torchmetrics.detection import MeanAveragePrecision

    seen = train_for(task, dm, cpu_seconds, lr)
    task.eval()
    metric = MeanAveragePrecision(backend="faster_coco_eval")
    done = 0
    with torch.no_grad():
        for images, targets in dm.val_dataloader():
            preds = task(list(images))
            metric.update([{k: p[k] for k in ("boxes", "scores", "labels")} for p in preds], [{k: t[k] for k in ("boxes", "labels")} for t in targets])  # fmt: skip
            done += len(images)
            if done >= val_images:
                break
    result = metric.compute()
    return seen, float(result["map_50"]), float(result["map"])


def main_learn(args: argparse.Namespace) -> None:
    rows = []
    for name, overrides in MODELS.items():
        torch.manual_seed(0)
        _cfg, dm, task = build(overrides)
        seen, map50, map_ = learn(task, dm, args.learn, args.val_images, args.lr)
        rows.append([name, args.learn, seen, f"{map50:.3f}", f"{map_:.3f}"])
        print(rows[-1], flush=True)
    write_table(
        "rtdet_learning" + args.name,
        f"rtdet vs Faster R-CNN at equal CPU time, shapes detection 64 px, {args.threads} thread(s)",
        ["model", "train CPU s", "images seen", "val mAP@0.5", "val mAP"],
        rows,
        f"AdamW lr {args.lr}, 50-step warm-up, batch 16, loading in-process; val: first {args.val_images} images.",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--learn", type=float, default=0.0, help="CPU seconds of training per model (learning mode)")  # fmt: skip
    parser.add_argument("--val-images", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--models", nargs="*", default=["fasterrcnn (default)", "rtdet_n", "rtdet_n strides 4/8/16"])  # fmt: skip
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.models:
        for name in list(MODELS):
            if name not in args.models:
                del MODELS[name]
    if args.learn:
        return main_learn(args)
    rows = []
    for name, overrides in MODELS.items():
        _cfg, dm, task = build(overrides)
        data = batches(dm, args.steps)
        images = [im for ims, _ in data for im in ims][:64]
        train_ips, phases = train_speed(task, data, args.repeats)
        b1, b16 = infer_speed(task, images, 1), infer_speed(task, images, 16)
        params = sum(p.numel() for p in task.parameters()) / 1e6
        rows.append([name, f"{params:.2f}", f"{train_ips:.0f}", *(f"{v:.1f}" for v in phases.values()), f"{b1:.0f}", f"{b16:.0f}"])  # fmt: skip
        print(rows[-1], flush=True)
    write_table(
        "rtdet_speed" + args.name,
        f"rtdet vs Faster R-CNN, shapes detection 64 px, {args.threads} thread(s), batch 16",
        [
            "model",
            "params M",
            "train img/s",
            "fwd+loss ms/step",
            "backward ms/step",
            "optimizer ms/step",
            "infer img/s b1",
            "infer img/s b16",
        ],
        rows,
        "Training on batches already in memory (no data loading); inference in eval mode, post-processing included.",
    )


if __name__ == "__main__":
    main()
