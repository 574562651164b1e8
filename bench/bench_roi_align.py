"""RoIAlign cost: visionkit's ``roi_align`` (separable form on small CPU maps) vs torchvision's op.

Two views, interleaved rounds and medians so machine noise hits both alike:
1. the op alone, forward + backward, on the shapes the R-CNN heads see on the shapes data
   (64 px images, 16 per batch) and on larger maps where visionkit hands over to torchvision;
2. one Mask R-CNN / Faster R-CNN training step (default head config, batch of 16 shapes images)
   with torchvision's ``MultiScaleRoIAlign`` swapped in, vs ours.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torchvision
from common import compose, write_table

DATA_DIR = str(Path(__file__).resolve().parents[1] / "data")
# (images, channels, map side, rois, output side): box pooling, mask pooling, a larger level,
# and COCO-like maps where the separable form would cost more than torchvision's kernel
OP_CASES = [
    (16, 64, 16, 512, 7),
    (16, 64, 16, 128, 14),
    (16, 64, 32, 512, 7),
    (2, 256, 50, 1024, 7),
]


def fwd_bwd(fn: Callable[[], torch.Tensor]) -> float:
    start = time.perf_counter()
    y = fn()
    y.backward(torch.ones_like(y))
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Median seconds of each timing function, called in rotating order each round."""
    for f in fns.values():
        f()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            times[name].append(fns[name]())
    return {k: statistics.median(v) for k, v in times.items()}


def _row(case: str, med: dict[str, float]) -> list[object]:
    return [
        case,
        med["torchvision"] * 1e3,
        med["visionkit"] * 1e3,
        med["torchvision"] / med["visionkit"],
    ]


def op_rows(rounds: int) -> list[list[object]]:
    from visionkit.layers.roi_align import roi_align

    rows = []
    for n, c, side, r, out in OP_CASES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, side, side, requires_grad=True)
        xy = torch.rand(r, 2, generator=g) * side * 3
        wh = torch.rand(r, 2, generator=g) * side * 1.2 + 5
        image = torch.randint(0, n, (r,), generator=g).float()
        rois = torch.cat([image[:, None], xy, xy + wh], 1)
        args = (x, rois, out, 0.25, 2)
        fns = {
            "torchvision": partial(fwd_bwd, partial(torchvision.ops.roi_align, *args)),
            "visionkit": partial(fwd_bwd, partial(roi_align, *args)),
        }
        med = interleaved(fns, rounds)
        rows.append(_row(f"op {n}x{c}x{side}x{side}, {r} rois -> {out}x{out}", med))
    return rows


def separable_everywhere(features, rois, output_size, spatial_scale, sampling_ratio):
    """The separable form for every call (what ``roi_align`` did before it sent no-grad calls to
    torchvision's kernel)."""
    from visionkit.layers.roi_align import _separable_roi_align

    size = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(rois) == 0:
        return torchvision.ops.roi_align(features, rois, size, spatial_scale, sampling_ratio)
    counts = torch.bincount(rois[:, 0].long(), minlength=features.shape[0])
    return _separable_roi_align(features, rois, counts, size, spatial_scale, sampling_ratio)


def eval_forward(model, images, roi_align_fn) -> float:
    """Seconds of one eval-mode detector forward with ``roi_align_fn`` in the RoI poolers."""
    import visionkit.layers.roi_align as ra

    kept, ra.roi_align = ra.roi_align, roi_align_fn
    try:
        start = time.perf_counter()
        with torch.no_grad():
            model(images)
        return time.perf_counter() - start
    finally:
        ra.roi_align = kept


def train_step(model, pools: dict[str, torch.nn.Module], images, targets) -> float:
    """Seconds of one detector forward + backward with the given RoI poolers in the RoI heads."""
    for attr, pooler in pools.items():
        setattr(model.head.detector.roi_heads, attr, pooler)
    torch.manual_seed(0)
    start = time.perf_counter()
    losses = model.head(images, targets, model.features)
    sum(losses.values()).backward()
    return time.perf_counter() - start


def step_rows(rounds: int) -> list[list[object]]:
    from visionkit import runner
    from visionkit.plugins import load_all

    load_all()
    rows = []
    for task, pools in (
        ("instance_segmentation", ("box_roi_pool", "mask_roi_pool")),
        ("detection", ("box_roi_pool",)),
    ):
        cfg = compose([f"task={task}", f"paths.data_dir={DATA_DIR}", "data.num_workers=0"])
        dm = runner.build_datamodule(cfg)
        torch.manual_seed(0)
        model = runner.build_task(cfg, dm).train()
        heads = model.head.detector.roi_heads
        ours = {p: getattr(heads, p) for p in pools}
        reference = {
            p: torchvision.ops.MultiScaleRoIAlign(m.featmap_names, m.output_size, m.sampling_ratio)
            for p, m in ours.items()
        }
        images, targets = next(iter(dm.train_dataloader()))

        fns = {
            "torchvision": partial(train_step, model, reference, images, targets),
            "visionkit": partial(train_step, model, ours, images, targets),
        }
        med = interleaved(fns, rounds)
        name = type(model.head).__name__
        rows.append(_row(f"{name} train step at init, batch {len(images)}", med))
        model.eval()
        fns = {
            "torchvision": partial(eval_forward, model, images, torchvision.ops.roi_align),
            "visionkit": partial(eval_forward, model, images, separable_everywhere),
        }
        med = interleaved(fns, rounds)
        rows.append(_row(f"{name} eval forward at init, batch {len(images)}, separable form", med))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = op_rows(args.rounds) + step_rows(args.rounds)
    write_table(
        "bench_roi_align",
        f"RoIAlign forward+backward, CPU, {torch.get_num_threads()} threads (median of {args.rounds})",
        ["case", "torchvision ms", "visionkit ms", "speed-up"],
        rows,
        notes=(
            "Same values and gradients as torchvision (tests/layers/test_roi_align.py). On large "
            "maps visionkit calls torchvision's kernel, so the last op row is ~1. The eval rows time the "
            "separable form in every pooler: no gain without a backward, so `roi_align` runs "
            "torchvision's kernel when no gradient is needed."
        ),
    )


if __name__ == "__main__":
    main()
