"""Activation cost inside a MobileNet-style backbone: forward with h-swish vs ReLU6 and swish.

Same backbone (``mobilenet``), same weights where shapes agree, same input; only ``act`` changes.
Runs are interleaved per round and medians compared.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_table


def forward_time(model: torch.nn.Module, x: torch.Tensor, iters: int) -> float:
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(iters):
            model(x)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from visionkit.plugins import load_all
    from visionkit.registries import BACKBONES

    load_all()
    torch.manual_seed(0)
    acts = ["relu6", "hswish", "swish", "relu"]
    models = {a: BACKBONES.build({"name": "mobilenet", "act": a}).eval() for a in acts}
    state = models["relu6"].state_dict()
    for m in models.values():
        m.load_state_dict(state, strict=False)
    x = torch.randn(args.batch, 3, args.size, args.size)
    times: dict[str, list[float]] = {a: [] for a in acts}
    for m in models.values():
        forward_time(m, x, 1)  # warm-up
    order = list(models)
    for r in range(args.rounds):
        for a in order[r % len(order) :] + order[: r % len(order)]:  # rotate who runs first
            times[a].append(forward_time(models[a], x, args.iters))
    med = {a: statistics.median(t) for a, t in times.items()}
    rows = [[a, med[a] * 1e3, med[a] / med["relu6"], med[a] / med["swish"]] for a in acts]
    write_table(
        "bench_activations",
        f"mobilenet forward, batch {args.batch} x 3 x {args.size}^2, {args.threads} thread(s), CPU, eval",
        ["act", "ms / forward", "ratio vs relu6", "ratio vs swish"],
        rows,
        notes=f"hswish / relu6 = {med['hswish'] / med['relu6']:.2f}, hswish / swish = {med['hswish'] / med['swish']:.2f}",
    )


if __name__ == "__main__":
    main()
