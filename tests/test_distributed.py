"""visionkit.distributed: alone every helper is the one-process identity; on 2 gloo processes
``mean_over_ranks`` gives every rank the mean (rtdet's loss normaliser)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.multiprocessing as mp

from tests.conftest import free_port
from visionkit import distributed


def test_mean_over_ranks_alone_is_the_value_itself() -> None:
    value = torch.tensor(7.0, requires_grad=True)
    assert not distributed.is_initialized() and distributed.world_size() == 1
    assert distributed.mean_over_ranks(value) is value


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        count = torch.tensor(2.0 + 4.0 * rank, requires_grad=True)  # positives: 2 and 6
        mean = distributed.mean_over_ranks(count)
        torch.save({"mean": mean, "count": count.detach(), "grad": mean.requires_grad}, f"{out}/{rank}.pt")  # fmt: skip
    finally:
        dist.barrier()  # no rank tears gloo down while the other still talks to it
        dist.destroy_process_group()


def test_mean_over_ranks_on_two_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got["mean"].item() == 4.0 and got["count"].item() == 2.0 + 4.0 * rank
        assert got["grad"] is False  # a normaliser: no gradient flows through it
