"""Real-time instance segmentation (rtdet_seg_n) against the default Mask R-CNN, side by side in one
process, on ``data=shapes task=instance_segmentation`` (64 px), ``--threads`` torch threads.

Per model: training images/s (full steps on batches already in memory) and inference images/s at
batch 1 and 16 (``bench_rtdet``'s measures), then learning at equal CPU time: ``--learn`` CPU
seconds of this process (data loading included, fair on a shared machine) of AdamW at ``--lr``
after a 50-step warm-up, and the validation box and mask AP50 / AP (the task's own metric, COCO
evaluation) on the first ``--val-images`` images. Prints a table and saves
bench/results/rtdet_seg.md.

    python bench/bench_rtdet_seg.py --threads 1 --learn 150 --val-images 400
    python bench/bench_rtdet_seg.py --threads 1 --learn 5 --val-images 16 --steps 2 --repeats 1  # check
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_rtdet import batches, build, infer_speed, train_for, train_speed
from common import write_table

MODELS = {
    "maskrcnn (default)": ["task=instance_segmentation"],
    "rtdet_seg_n": ["experiment=rtdet_seg_n"],
}


@torch.no_grad()
def evaluate(task, dm, val_images: int) -> dict[str, float]:
    """The task's own validation metric (box and mask COCO mAP) on the first ``val_images``."""
    task.eval()
    metric = task.validation_metric()
    metric.reset()
    done = 0
    for batch in dm.val_dataloader():
        task.measure(batch, metric)
        done += len(batch[0])
        if done >= val_images:
            break
    values = task.metric_values(metric.compute())
    metric.reset()
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="batches timed for training speed")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--learn", type=float, default=150.0, help="CPU seconds of training per model")  # fmt: skip
    parser.add_argument("--val-images", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--name", default="", help="suffix of the results file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        _cfg, dm, task = build(["data.num_workers=0", *MODELS[name]])
        data = batches(dm, args.steps)
        images = [im for ims, _ in data for im in ims][:64]
        train_ips, _phases = train_speed(task, data, args.repeats)
        b1, b16 = infer_speed(task, images, 1), infer_speed(task, images, 16)
        torch.manual_seed(0)
        _cfg, dm, task = build(["data.num_workers=0", *MODELS[name]])  # learning starts afresh
        seen = train_for(task, dm, args.learn, args.lr)
        v = evaluate(task, dm, args.val_images)
        rows.append([name, f"{train_ips:.0f}", f"{b1:.0f}", f"{b16:.0f}", seen,
                     f"{v['segm_map_50']:.3f} / {v['segm_map']:.3f}", f"{v['bbox_map_50']:.3f} / {v['bbox_map']:.3f}"])  # fmt: skip
        print(rows[-1], flush=True)
    ratio = None
    if len(rows) == 2:
        a, b = rows

        def r(i: int) -> str:
            return f"{float(b[i]) / float(a[i]):.2f}"

        def rr(i: int) -> str:
            x, y = ([float(p) for p in row[i].split(" / ")] for row in (a, b))
            return " / ".join(f"{q / max(p, 1e-9):.2f}" for p, q in zip(x, y, strict=True))

        ratio = [f"{b[0]} / {a[0]}", r(1), r(2), r(3), r(4), rr(5), rr(6)]
    title = f"Real-time instance segmentation vs Mask R-CNN, shapes 64 px, {args.threads} thread(s), batch 16, {args.learn:g} CPU s of training each"  # fmt: skip
    header = ["model", "train img/s", "infer img/s b1", "infer img/s b16", "images seen", "val segm AP50 / AP", "val box AP50 / AP"]  # fmt: skip
    notes = (
        "Speed: training on batches in memory, inference in eval mode with post-processing (masks "
        f"at the image size). Learning: AdamW lr {args.lr}, 50-step warm-up, loading in-process, "
        f"equal CPU time; val: first {args.val_images} images, the task's metric."
    )
    write_table("rtdet_seg" + args.name, title, header, [*rows, *([ratio] if ratio else [])], notes)


if __name__ == "__main__":
    main()
