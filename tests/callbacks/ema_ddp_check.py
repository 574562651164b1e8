"""Run by tests with 2 CPU processes (gloo): during each validation, does every rank hold the same
averaged weights and BatchNorm buffers? Usage: ema_ddp_check.py OUT.json. Runs visionkit's EMA
under a freeze schedule (``gradual``) and, as the control, the same EMA without its rank sync.
"""

from __future__ import annotations

import json
import os
import sys

import pytorch_lightning as pl
import torch
from ddp_check import weights_equal_across_ranks
from finetune_toy import ToyData, make_task, trainer

from visionkit.callbacks.ema import EMA


class RankCheck(pl.Callback):
    def __init__(self) -> None:
        self.records: list[dict] = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:  # fmt: skip
        if batch_idx == 0:  # the EMA callback swapped the average in at epoch start
            self.records.append({"epoch": trainer.current_epoch, "val_equal": weights_equal_across_ranks(pl_module, buffers=True)})  # fmt: skip

    def on_train_epoch_end(
        self, trainer, pl_module
    ) -> None:  # raw weights: buffers differ per rank
        self.records[-1]["raw_equal"] = weights_equal_across_ranks(pl_module, buffers=True)


class NoSync(EMA):
    def _sync(self, trainer) -> None:
        pass


def run(ema: EMA) -> list[dict]:
    from visionkit.plugins import load_builtins
    from visionkit.registries import CALLBACKS

    pl.seed_everything(0, verbose=False)
    load_builtins()
    check = RankCheck()
    t = trainer([CALLBACKS.build({"name": "gradual"}), ema, check], 2, devices=2, strategy="ddp",
                deterministic=False, limit_val_batches=1, num_sanity_val_steps=0)  # fmt: skip
    t.fit(make_task(), datamodule=ToyData(n=32, batch_size=4))
    return check.records


def main() -> None:
    torch.set_num_threads(1)
    results = {"ema": run(EMA(decay=0.5)), "nosync": run(NoSync(decay=0.5))}
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        with open(sys.argv[1], "w") as f:
            json.dump(results, f)


if __name__ == "__main__":
    main()
