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
from visionkit.files import atomic_open

if TYPE_CHECKING:
    import pytorch_lightning as pl

    from visionkit.tasks.base import BaseTask

# task config keys read by the commands, not passed to the task's constructor
RUN_KEYS = ("name", "monitor", "monitor_mode", "low_train_metric")


def setup(cfg: DictConfig, model_file: bool = False) -> Path:
    """Check the config's paths, load built-in parts and plugins, seed everything; returns the
    run directory. ``model_file``: ``ckpt_path`` may be an exported model too (predict)."""
    check_paths(cfg, model_file)
    from visionkit.plugins import load_configured

    load_configured(cfg)  # torch, not Lightning: a plugin's failure is reported seconds sooner
    import pytorch_lightning as pl

    if cfg.get("trainer") is not None:
        check_trainer_config(cfg.trainer)
    if cfg.get("optimizer"):
        check_optimizer_config(cfg.optimizer)
    # the run directory already holds Hydra's files when the CSV logger opens it: expected
    warnings.filterwarnings(
        "ignore", message="Experiment logs directory .* exists and is not empty"
    )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def check_paths(cfg: DictConfig, model_file: bool = False) -> None:
    """The checks of the config's paths that need no torch, run before torch and Lightning are
    imported (seconds), so a wrong path is one error line at once: ``ckpt_path`` is a file, a
    file format's ``data.root`` a folder, no file stands where the generated data's root would
    be made. What the files hold is checked where they are read."""
    from visionkit import checkpoints
    from visionkit.data.validation import ROOT_FORMATS, require_root
    from visionkit.inference import require_model_file

    ckpt = cfg.get("ckpt_path")
    if model_file and ckpt:
        require_model_file(ckpt)
    elif ckpt and (str(ckpt) not in checkpoints.LIGHTNING_PATHS or Path(ckpt).is_file()):
        checkpoints.require_file(ckpt)  # Lightning resolves its own keywords (last, best, ...)
    data = cfg.get("data")
    if not isinstance(data, DictConfig) or not data.get("root"):
        return
    if data.get("name") in ROOT_FORMATS:
        require_root(data.name, Path(data.root).expanduser())
    elif data.get("name") == "shapes":  # generated under root: nothing may stand in the way
        from visionkit.data.shapes.generator import check_root

        check_root(Path(data.root).expanduser())


def _type_matches(value: Any, hint: Any) -> bool:
    """Whether a config value fits a (simple) annotation; classes we cannot judge pass."""
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin is typing.Union:
        return any(_type_matches(value, a) for a in args)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple) or hint in (list, tuple):
        return isinstance(value, list | tuple)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return not isinstance(value, bool | int | float | str | type(None))


def _describe(hint: Any) -> str:
    import typing

    if typing.get_origin(hint) in (typing.Union, typing.Literal):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", None) or repr(hint)


def check_trainer_config(trainer_cfg: DictConfig) -> None:
    """Every ``trainer.*`` key is a pl.Trainer argument of the annotated type, so
    ``trainer.max_epochs=abc`` stops here with the key named, not deep inside the fit loop."""
    import difflib
    import inspect
    import typing

    import pytorch_lightning as pl

    params = inspect.signature(pl.Trainer.__init__).parameters
    try:
        hints = typing.get_type_hints(pl.Trainer.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: check names only
        hints = {}
    for key, value in OmegaConf.to_container(trainer_cfg, resolve=True).items():
        if key not in params or key == "self":
            close = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean trainer.{close[0]}?" if close else ""
            raise ConfigError(f"trainer.{key} is not a pytorch_lightning.Trainer argument{hint}")
        if key in hints and not _type_matches(value, hints[key]):
            raise ConfigError(
                f"trainer.{key}={value!r}: expected {_describe(hints[key])}, got "
                f"{type(value).__name__}"
            )


# words of optimizer error messages -> the config key they are about
_OPTIMIZER_KEY_WORDS = {"lr": ("learning rate",), "betas": ("beta",), "eps": ("epsilon",)}


def check_optimizer_config(opt_cfg: DictConfig) -> None:
    """Build the configured optimizer on one dummy parameter before any data is read or step
    taken, so ``optimizer.lr=-1`` is one error naming the key (the task builds the real one)."""
    import inspect

    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    spec = OmegaConf.to_container(opt_cfg, resolve=True)
    target = spec.get("_target_", "optimizer")
    try:
        factory = instantiate(opt_cfg)
    except InstantiationException as exc:
        raise ConfigError(f"optimizer._target_={target!r} cannot be built: {exc}") from None
    keys = [k for k in spec if not k.startswith("_")]
    try:
        params = inspect.signature(getattr(factory, "func", factory)).parameters
    except (TypeError, ValueError):
        params = {}
    for key in keys:
        default = params[key].default if key in params else None
        number = isinstance(default, int | float) and not isinstance(default, bool)
        if number and not (isinstance(spec[key], int | float) and not isinstance(spec[key], bool)):
            raise ConfigError(f"optimizer.{key}={spec[key]!r} must be a number ({target})")
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError, RuntimeError) as exc:  # torch: RuntimeError for fused + foreach
        text = str(exc)
        lower = text.lower()
        named = [k for k in keys if k in lower or any(w in lower for w in _OPTIMIZER_KEY_WORDS.get(k, ()))]  # fmt: skip
        where = f"optimizer.{named[0]}={spec[named[0]]!r}" if named else "optimizer config"
        # e.g. the shipped `fused: true` kept when optimizer._target_ names a class without it
        hint = (
            f" (drop it: ~optimizer.{named[0]})" if named and "unexpected keyword" in lower else ""
        )
        raise ConfigError(f"{where} is invalid for {target}: {text}{hint}") from None


def contributions(stage: str, *sources: Any) -> dict[str, Any]:
    """What ``sources`` (the task, callbacks, the datamodule) contribute to results.json for
    ``stage`` through their one method ``extra_results(stage)``: ``"val"`` (fit's validation:
    the best epoch's ``val/*``, early stopping), ``"test"`` (file paths, per-class tables) or
    ``"run"`` (once per run: data skipped, pretrained weights loaded, the finetune schedule).
    Sources without the method contribute nothing; the commands alone write results.json."""
    out: dict[str, Any] = {}
    for source in sources:
        contribute = getattr(source, "extra_results", None)
        if callable(contribute):
            out.update(contribute(stage))
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
    if isinstance(kwargs.get("class_weights"), str):  # a method: weights from the training split
        from visionkit.data.imbalance import weights_from_data

        beta = kwargs.get("class_weights_beta", 0.999)
        kwargs["class_weights"] = weights_from_data(dm, kwargs["class_weights"], beta)
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
    """``pl.Trainer(**cfg.trainer)`` with the configured loggers and callbacks.

    Every trainer also gets what makes a resume exact (per-epoch seeding, purge of the abandoned
    timeline's rows, see ``visionkit.callbacks.resuming``) and atomic checkpoint writing.
    """
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from visionkit.callbacks.resuming import AtomicCheckpointIO, EpochSeed, PurgeAbandonedRows

    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    callbacks = build_callbacks(cfg) if callbacks is None else list(callbacks)
    plugins = kwargs.pop("plugins", None) or []
    try:
        return pl.Trainer(
            **kwargs,
            logger=loggers or False,
            callbacks=[*callbacks, EpochSeed(cfg.seed), PurgeAbandonedRows()],
            plugins=[*(plugins if isinstance(plugins, list) else [plugins]), AtomicCheckpointIO()],
            default_root_dir=cfg.paths.output_dir,
        )
    except (MisconfigurationException, ValueError, TypeError) as exc:  # values the types allow
        raise ConfigError(f"trainer config (keys trainer.*): {exc}") from None


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
    with atomic_open(path) as file:  # a crash leaves the previous results.json, never half of one
        file.write(json.dumps(existing, indent=2, sort_keys=True, default=str) + "\n")
    return path


def publish_run(trainer: pl.Trainer, cfg: DictConfig, out: Path) -> None:
    """The composed config, results.json and the run's pictures to the loggers that store files."""
    from visionkit.loggers import publish_run as publish

    publish(trainer.loggers, out, OmegaConf.to_container(cfg, resolve=True))


def error_analysis(task: BaseTask, cfg: DictConfig, out: Path) -> tuple[dict[str, Any], list[str]]:
    """The task's error analysis after test (``cfg.error_analysis``; null: none): results.json
    entries and the pictures written. Tasks without ``error_analysis`` give nothing."""
    options = cfg.get("error_analysis")
    analyse = getattr(task, "error_analysis", None)
    if options is None or not callable(analyse):
        return {}, []
    return analyse(str(out), **OmegaConf.to_container(options, resolve=True))


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
