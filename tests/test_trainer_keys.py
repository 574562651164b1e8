"""Gradient clipping and accumulation through Lightning's keys as a user sets them
(``trainer.gradient_clip_val``, ``trainer.accumulate_grad_batches``, via ``runner.build_trainer``):
the oracles are the clipped update's norm and the large-batch run's weights."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, TensorDataset

from visionkit import runner


class Linear(pl.LightningModule):
    """A linear regression trained with plain SGD (lr 1: an update is minus the gradient)."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.batch_size = batch_size
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(24, 4, generator=g) * 5, torch.randn(24, 1, generator=g) * 5
        self.raw_norms: list[float] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.layer(batch[0]) - batch[1]).pow(2).mean()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning clips after this hook: the norm before clipping
        grads = [p.grad.reshape(-1) for p in self.parameters()]
        self.raw_norms.append(float(torch.cat(grads).norm()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.batch_size)


class Updates(pl.Callback):
    """The norm of each optimizer step's change of the weights."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before = torch.cat([p.detach().reshape(-1).clone() for p in pl_module.parameters()])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if hasattr(self, "before"):
            after = torch.cat([p.detach().reshape(-1) for p in pl_module.parameters()])
            self.norms.append(float((after - self.before).norm()))
            del self.before


def fit(tmp_path: Path, model: Linear, **trainer_keys) -> tuple[pl.Trainer, Updates]:
    cfg = OmegaConf.create({
        "seed": 0, "paths": {"output_dir": str(tmp_path)},
        "trainer": {"accelerator": "cpu", "devices": 1, "max_epochs": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "enable_checkpointing": False, **trainer_keys},
    })  # fmt: skip
    runner.check_trainer_config(cfg.trainer)
    updates = Updates()
    trainer = runner.build_trainer(cfg, callbacks=[updates])
    trainer.fit(model)
    return trainer, updates


def test_gradient_clip_val_bounds_each_update(tmp_path: Path) -> None:
    model = Linear(batch_size=4)
    trainer, updates = fit(tmp_path, model, gradient_clip_val=0.5)
    assert trainer.gradient_clip_val == 0.5
    assert len(updates.norms) == 6
    assert min(model.raw_norms) > 0.5  # every step needed clipping ...
    for norm in updates.norms:  # ... and moved the weights by exactly the clip norm (lr 1)
        assert abs(norm - 0.5) < 1e-4


def test_accumulate_grad_batches_equals_the_larger_batch(tmp_path: Path) -> None:
    big = Linear(batch_size=4)
    fit(tmp_path / "big", big)
    small = Linear(batch_size=2)
    trainer, updates = fit(tmp_path / "small", small, accumulate_grad_batches=2)
    assert trainer.global_step == 6 and len(updates.norms) == 6  # 12 batches, 6 optimizer steps
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
