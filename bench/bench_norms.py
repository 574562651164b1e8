"""Norm cost: forward+backward of each NORMS entry vs torch's BatchNorm2d on the same tensor.

Issue 3 asks SwitchableNorm (``sn``) to stay within 3x BatchNorm2d. Runs are interleaved (one of
each per round) and the median per norm is compared, so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_table


def fwd_bwd_time(module: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        x.grad = None
        module(x).backward(grad)
    return (time.perf_counter() - start) / iters


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 64, 32, 32])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import visionkit.layers  # noqa: F401
    from visionkit.registries import NORMS

    c = args.shape[1]
    x = torch.randn(*args.shape, requires_grad=True)
    grad = torch.randn(*args.shape)
    modules = {"BatchNorm2d (reference)": torch.nn.BatchNorm2d(c)}
    modules.update({name: NORMS.build(name, c) for name in ("sn", "bn", "gn", "ln", "in", "frozen_bn")})  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in modules}
    for m in modules.values():
        fwd_bwd_time(m, x, grad, 2)  # warm-up
    order = list(modules)
    for r in range(args.rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate who runs first
            times[name].append(fwd_bwd_time(modules[name], x, grad, args.iters))
    ref = statistics.median(times["BatchNorm2d (reference)"])
    rows = [[name, statistics.median(t) * 1e3, statistics.median(t) / ref] for name, t in times.items()]  # fmt: skip
    sn_ratio = statistics.median(times["sn"]) / ref
    write_table(
        "bench_norms",
        f"Norm forward+backward on {tuple(args.shape)}, {args.threads} thread(s), CPU",
        ["norm", "ms / iter", "ratio vs BatchNorm2d"],
        rows,
        notes=f"SwitchableNorm / BatchNorm2d = {sn_ratio:.2f} (target <= 3): {'PASS' if sn_ratio <= 3 else 'FAIL'}",
    )


if __name__ == "__main__":
    main()
