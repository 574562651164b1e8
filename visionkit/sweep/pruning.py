"""The objective during training: checked once it is first logged, reported to Optuna each epoch.

:class:`ObjectiveMonitor` raises a :class:`ConfigError` after the first validation when a
``val/*`` objective is not a logged metric (not after hours of training). In a job of visionkit's Optuna
sweeper it also reports the objective to the job's trial every validation epoch and stops the
trial (``optuna.TrialPruned``) when the study's pruner judges it clearly bad; the sweeper records
it as pruned. Only rank zero talks to the study; its decision is broadcast to every rank.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from visionkit.sweep.objective import check_logged

SWEEPER_CLASS = "VisionkitOptunaSweeper"


def current_trial() -> Any:
    """The Optuna trial this Hydra job runs, or None (no sweep, or another sweeper).

    The study (storage, name, pruner) is read from the job's ``hydra.sweeper`` config and the
    trial is the one numbered as the job (the sweeper launches trial N as job N).
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    sweeper = hydra_cfg.get("sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith(SWEEPER_CLASS):
        return None
    if hydra_cfg.job.get("num") is None:
        return None
    import optuna
    from hydra.utils import instantiate

    pruner = instantiate(sweeper.pruner) if sweeper.get("pruner") else optuna.pruners.NopPruner()
    study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage, pruner=pruner)
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, int(hydra_cfg.job.num)
    )
    return optuna.trial.Trial(study, trial_id)


class ObjectiveMonitor(pl.Callback):
    """Checks that ``key`` is logged; with an Optuna ``trial``, reports it and prunes."""

    def __init__(self, key: str, trial: Any = None) -> None:
        self.key = key
        self.trial = trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        if not self.key.startswith("val/"):
            return  # a test/* objective is known after testing only
        check_logged(self.key, trainer.callback_metrics)
        value = float(trainer.callback_metrics[self.key])
        epoch = int(trainer.current_epoch)
        prune = False
        # only rank zero has the trial (a DDP child runs outside the sweep): every rank joins the
        # broadcast of its decision
        if self.trial is not None and trainer.is_global_zero and math.isfinite(value):
            self.trial.report(value, step=epoch)
            prune = bool(self.trial.should_prune())
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune)
        if prune:
            import optuna

            raise optuna.TrialPruned(f"pruned at epoch {epoch} with {self.key}={value:.6g}")
