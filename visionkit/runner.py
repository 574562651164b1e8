"""The steps every command shares, in a fixed order: set up, data, task, trainer, results.

Commands (``visionkit.commands.*``) are thin: they call these with the composed Hydra config.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from visionkit.errors import ConfigError

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from visionkit.tasks.base import BaseTask

# task config keys read by the commands, not passed to the task's constructor
RUN_KEYS = ("name", "monitor", "monitor_mode")


def setup(cfg: DictConfig) -> Path:
    """Load built-in parts and plugins, seed everything; returns the run directory."""
    import pytorch_lightning as pl

    from visionkit.plugins import load_configured

    load_configured(cfg)
    # the run directory already holds Hydra's files when the CSV logger opens it: expected
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_datamodule(cfg: DictConfig, task_name: str | None = None) -> pl.LightningDataModule:
    """The datamodule named by ``cfg.data``, prepared and set up for fitting."""
    from visionkit.registries import DATASETS

    dm = DATASETS.build(cfg.data, task=task_name or cfg.task.name)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def build_task(cfg: DictConfig, dm: pl.LightningDataModule) -> BaseTask:
    """The task named by ``cfg.task`` with the datamodule's classes."""
    from visionkit.registries import TASKS

    spec = OmegaConf.to_container(cfg.task, resolve=True)
    task_cls = TASKS.get(spec["name"])
    kwargs = {k: v for k, v in spec.items() if k not in RUN_KEYS}
    return task_cls(
        model=cfg.model,
        num_classes=dm.num_classes,
        label_map=dm.label_map.to_dict(),
        # a datamodule without one (third-party): its checkpoints cannot be predicted with alone
        preprocessing=dm.preprocessing() if callable(getattr(dm, "preprocessing", None)) else None,
        optimizer=cfg.get("optimizer"),
        scheduler=cfg.get("scheduler"),
        **kwargs,
    )


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """``cfg.callbacks`` (ours by CALLBACKS ``name``, Lightning's by ``_target_``) + the schedule."""
    from hydra.utils import instantiate

    from visionkit.registries import CALLBACKS

    callbacks = [
        CALLBACKS.build(node) if "name" in node else instantiate(node)
        for node in (cfg.get("callbacks") or {}).values()
        if node is not None
    ]
    if cfg.get("finetune"):
        callbacks.append(CALLBACKS.build(cfg.finetune))
    return callbacks


def build_trainer(cfg: DictConfig, callbacks: list[Any] | None = None) -> pl.Trainer:
    """``pl.Trainer(**cfg.trainer)`` with the configured loggers and callbacks."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    return pl.Trainer(
        **kwargs,
        logger=loggers or False,
        callbacks=build_callbacks(cfg) if callbacks is None else callbacks,
        default_root_dir=cfg.paths.output_dir,
    )


def checkpoint_callback(trainer: pl.Trainer) -> Any:
    return getattr(trainer, "checkpoint_callback", None)


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Logged metrics as plain floats (NaN becomes None for JSON)."""
    out = {}
    for key, value in sorted(metrics.items()):
        number = float(value.item() if hasattr(value, "item") else value)
        out[key] = None if math.isnan(number) else number
    return out


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """Write (or update) ``results.json`` in the run directory."""
    path = out / "results.json"
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing.update(results)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True, default=str) + "\n")
    return path


def save_config(cfg: DictConfig, out: Path) -> None:
    """The composed config, resolved, as ``config.yaml`` at the top of the run directory."""
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def load_task_from_checkpoint(path: str | os.PathLike) -> BaseTask:
    """Rebuild a task from a visionkit checkpoint (the task class is recorded inside it); the
    file is read as data only, and a part now supplied by another package is warned about."""
    from visionkit import checkpoints
    from visionkit.plugins import load_all
    from visionkit.registries import TASKS

    load_all()
    meta = checkpoints.meta(checkpoints.load(path), path)
    checkpoints.warn_suppliers(meta, path)
    task_cls = TASKS.get(meta["task"])
    return task_cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)


def has_split(dm: pl.LightningDataModule, split: str) -> bool:
    """Whether the datamodule has data for ``split`` (datamodules may define ``has_split``)."""
    check = getattr(dm, "has_split", None)
    return bool(check(split)) if callable(check) else True


def check_same_classes(task: BaseTask, dm: pl.LightningDataModule, ckpt_path: Any) -> None:
    """A checkpoint evaluated on data with other classes would give meaningless numbers."""
    saved = task.label_map.ids
    if list(saved) != list(dm.label_map.ids):
        raise ConfigError(
            f"{ckpt_path} was trained on category ids {list(saved)}, but the data "
            f"'{dm.__class__.__name__}' has {list(dm.label_map.ids)}"
        )
