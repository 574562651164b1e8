"""Run by tests with 2 CPU processes (gloo): are the weights identical across ranks at every
epoch start (after the schedule's phase change) and end? Usage: ddp_check.py SCHEDULES OUT.json [EPOCHS]
where SCHEDULES are comma-separated CALLBACKS keys or ``lightning`` (its BackboneFinetuning).
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from finetune_toy import ToyData, make_task, trainer


def weights_equal_across_ranks(module: torch.nn.Module, buffers: bool = False) -> bool:
    """Whether every parameter (with ``buffers``: every floating tensor of the state dict) equals
    rank 0's (all ranks must call it; True without a group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return True
    tensors = [t for t in module.state_dict().values() if t.is_floating_point()] if buffers else list(module.parameters())  # fmt: skip
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    same = torch.tensor([float(torch.equal(flat, reference))])
    dist.all_reduce(same, op=dist.ReduceOp.MIN)
    return bool(same.item())


class RankCheck(pl.Callback):
    """Records, per epoch, whether all ranks hold rank 0's weights, and the epoch's duration."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()
        trainable = sum(p.requires_grad for p in pl_module.backbone.parameters())
        self.records.append({"epoch": trainer.current_epoch, "backbone_trainable": trainable,
                             "start_equal": weights_equal_across_ranks(pl_module)})  # fmt: skip

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.records[-1]["seconds"] = time.perf_counter() - self.start
        self.records[-1]["end_equal"] = weights_equal_across_ranks(pl_module)


def run(name: str, epochs: int) -> list[dict]:
    pl.seed_everything(0, verbose=False)
    if name == "lightning":
        from pytorch_lightning.callbacks import BackboneFinetuning

        schedule = BackboneFinetuning(unfreeze_backbone_at_epoch=1, verbose=False)
    else:
        from visionkit.plugins import load_builtins
        from visionkit.registries import CALLBACKS

        load_builtins()
        schedule = CALLBACKS.build(name)
    check = RankCheck()
    # different data per rank comes from the DistributedSampler Lightning adds
    t = trainer([schedule, check], epochs, devices=2, strategy="ddp", deterministic=False)
    t.fit(make_task(), datamodule=ToyData(n=32, batch_size=4))
    return check.records


def main() -> None:
    names, out = sys.argv[1].split(","), sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(1)
    results = {name: run(name, epochs) for name in names}  # one process group for all runs
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        with open(out, "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
