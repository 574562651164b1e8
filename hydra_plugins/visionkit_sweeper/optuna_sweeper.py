"""``hydra/sweeper=visionkit_optuna``: the Hydra Sweeper plugin class and its config.

Hydra imports every module under ``hydra_plugins`` to discover plugins, so this one imports
neither Optuna nor visionkit's implementation (:mod:`visionkit.sweep.optuna_sweeper`) until a
sweep runs.
"""

# no `from __future__ import annotations`: Hydra imports this module outside sys.modules, where
# dataclasses cannot resolve string annotations
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class VisionkitOptunaSweeper(Sweeper):
    """Optuna's ask/tell loop over Hydra jobs: one trial per job, run by the configured launcher."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> Any:
        from visionkit.sweep.job import sweep_errors_to_exit
        from visionkit.sweep.optuna_sweeper import run_study

        with sweep_errors_to_exit():
            return run_study(self, arguments)


@dataclass
class VisionkitOptunaSweeperConf:
    """The sweeper's keys (``hydra.sweeper.*``); search spaces are in conf/hparams_search/."""

    _target_: str = "hydra_plugins.visionkit_sweeper.optuna_sweeper.VisionkitOptunaSweeper"
    # the sampler and pruner are built by the sweep (a resumed study's sampler seed moves on)
    _recursive_: bool = False
    # trials to finish (completed, pruned or failed), counting those a resumed study already has
    n_trials: int = 20
    # trials asked at once and launched together (run in parallel by a parallel launcher)
    n_jobs: int = 1
    # maximize | minimize; null: the objective's (the task's monitor_mode)
    direction: Any = None
    # the study lives under the sweep directory: rerun with the same hydra.sweep.dir to resume
    storage: Any = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: str = "visionkit"
    sampler: Any = field(
        default_factory=lambda: {"_target_": "optuna.samplers.TPESampler", "seed": "${seed}"}
    )
    # stops a trial whose per-epoch objective is clearly bad; null: never
    pruner: Any = field(
        default_factory=lambda: {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 3,
            "n_warmup_steps": 1,
        }
    )
    # override key -> Hydra sweep syntax: choice(a, b), range(1, 4), interval(0.1, 1), tag(log, ...)
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="visionkit_optuna",
    node=VisionkitOptunaSweeperConf,
    provider="visionkit",
)
