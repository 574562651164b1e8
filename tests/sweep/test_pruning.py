"""ObjectiveMonitor: the objective is checked at the first validation and reported to an Optuna
trial each epoch; a trial the pruner judges bad stops with ``optuna.TrialPruned``."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from visionkit.errors import ConfigError
from visionkit.sweep.pruning import ObjectiveMonitor


class Tiny(pl.LightningModule):
    """Logs val/acc = 0.1 * (epoch + 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        self.log("val/acc", 0.1 * (self.current_epoch + 1))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)  # fmt: skip

    val_dataloader = train_dataloader


def fit(monitor: ObjectiveMonitor, epochs: int = 3) -> pl.Trainer:
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, callbacks=[monitor])  # fmt: skip
    trainer.fit(Tiny())
    return trainer


def test_objective_not_logged_stops_at_the_first_validation() -> None:
    with pytest.raises(ConfigError, match="objective 'val/f1' is not a logged metric; logged: val/acc"):  # fmt: skip
        fit(ObjectiveMonitor("val/f1"))


def test_values_are_reported_and_a_bad_trial_is_pruned() -> None:
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    fit(ObjectiveMonitor("val/acc", trial=trial))
    assert study.trials[0].intermediate_values == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    # 0.25 is needed from epoch 1 on: the second epoch's 0.2 is pruned
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.25, n_warmup_steps=1))  # fmt: skip
    trial = study.ask()
    with pytest.raises(optuna.TrialPruned, match=r"pruned at epoch 1 with val/acc=0\.2"):
        fit(ObjectiveMonitor("val/acc", trial=trial))
