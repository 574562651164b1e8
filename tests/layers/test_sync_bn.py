"""sync_bn for real: 2 CPU processes (gloo) each with half a batch equal BatchNorm on the whole batch."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.conftest import free_port


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    import visionkit.layers  # noqa: F401
    from visionkit.registries import NORMS

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        x, g = _data()
        m = NORMS.build("sync_bn", 3).double()
        part = x[rank * 2 : rank * 2 + 2].clone().requires_grad_(True)
        y = m(part)
        y.backward(g[rank * 2 : rank * 2 + 2])
        torch.save({"y": y.detach(), "grad": part.grad, "rm": m.running_mean, "rv": m.running_var}, f"{out}/{rank}.pt")  # fmt: skip
    finally:
        dist.barrier()  # no rank tears gloo down while the other still talks to it
        dist.destroy_process_group()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64) * 2 + 1, torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)  # fmt: skip


def test_sync_bn_two_processes_equal_full_batch_bn(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    x, g = _data()
    x.requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3).double()
    y = bn(x)
    y.backward(g)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach())
    torch.testing.assert_close(torch.cat([p["grad"] for p in parts]), x.grad)
    for p in parts:
        torch.testing.assert_close(p["rm"], bn.running_mean)
        torch.testing.assert_close(p["rv"], bn.running_var)
