"""Framework overhead: a training epoch of visionkit vs a hand-written PyTorch loop.

Same model (same initial weights), same data loader (same batch order), same optimizer and thread
count. Each run trains 2 epochs and the second (steady-state) epoch is timed: from the epoch's start
to its end, data loading included. The two are run alternately; medians are compared. visionkit
runs with its default callbacks (checkpointing, CSV logging, LR monitor) but no progress bar.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time

import pytorch_lightning as pl
import torch
from common import compose, write_table


def plain_epoch(model: torch.nn.Module, loader, criterion, optimizer) -> float:
    """One epoch of the textbook loop; returns its wall time."""
    start = time.perf_counter()
    model.train()
    for images, targets in loader:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


class EpochTimer(pl.Callback):
    """Wall time of each training epoch, as Lightning runs it."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.times.append(time.perf_counter() - self.start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from visionkit import runner

    out = tempfile.mkdtemp()
    overrides = [
        f"hydra.run.dir={out}",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=0",
        "trainer.accelerator=cpu",
        "callbacks.progress=null",
        f"data.num_workers={args.workers}",
        "test_after_fit=false",
    ]
    cfg = compose(overrides)
    cfg.paths.output_dir = out
    runner.setup(cfg)
    dm = runner.build_datamodule(cfg)
    template = runner.build_task(cfg, dm)
    threads = torch.get_num_threads()

    vk_times, plain_times = [], []
    for _ in range(args.repeats):
        task = copy.deepcopy(template)
        timer = EpochTimer()
        trainer = runner.build_trainer(cfg, callbacks=[*runner.build_callbacks(cfg), timer])
        pl.seed_everything(0, verbose=False)
        trainer.fit(task, datamodule=dm)
        vk_times.append(timer.times[-1])

        task = copy.deepcopy(template)
        optimizer = task.configure_optimizers()["optimizer"]
        pl.seed_everything(0, verbose=False)
        for _ in range(2):
            last = plain_epoch(task, dm.train_dataloader(), task.criterion, optimizer)
        plain_times.append(last)

    vk, plain = statistics.median(vk_times), statistics.median(plain_times)
    n = len(dm.train_dataloader())
    write_table(
        "train_overhead",
        f"One training epoch, shapes classification ({n} batches, {threads} threads, {args.workers} workers)",
        ["loop", "median 2nd-epoch s", "ratio"],
        [["hand-written PyTorch loop", plain, 1.0], ["visionkit (Lightning)", vk, vk / plain]],
        f"Median of {args.repeats} alternating runs. Goal: ratio <= 1.05.",
    )


if __name__ == "__main__":
    main()
