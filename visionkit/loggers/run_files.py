"""The run's files for the experiment trackers: the composed config, results.json and pictures.

Lightning's loggers (``conf/logger/``: csv, tensorboard, mlflow, wandb) log the metrics as they come.
At the end of a command, :func:`publish_run` hands each logger that can store files the composed
config, ``results.json`` and every PNG of the run directory (overlays, learning curves, confusion
matrices, ...):

* MLflow: artifacts ``config.yaml``, ``results.json`` and ``pictures/<path in the run dir>``;
* Weights & Biases: the config under ``config``, each picture as an image ``pictures/<path>``, and
  ``config.yaml`` / ``results.json`` as run files;
* TensorBoard: the config as text, each picture as an image.

A logger of another kind (a plugin's) takes part by defining
``log_run_files(config: dict, files: list[pathlib.Path], run_dir: pathlib.Path)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# folders of the run directory the loggers themselves write (their copies are not run pictures)
LOGGER_DIRS = ("mlflow", "wandb", "tensorboard")


def run_pictures(run_dir: Path) -> list[Path]:
    """Every PNG under ``run_dir`` outside the loggers' own folders, sorted."""
    return sorted(
        p
        for p in run_dir.rglob("*.png")
        if p.is_file() and p.relative_to(run_dir).parts[0] not in LOGGER_DIRS
    )


def publish_run(loggers: Iterable[Any], run_dir: str | Path, config: dict[str, Any] | None) -> None:
    """Send ``config`` (the composed config as a dict), results.json and the run's pictures to
    every logger that stores files (rank zero only; call it once the run's files are written)."""
    run_dir = Path(run_dir)
    pictures = run_pictures(run_dir)
    results = run_dir / "results.json"
    files = [*([results] if results.is_file() else []), *pictures]
    for logger in loggers:
        own = getattr(logger, "log_run_files", None)
        if callable(own):
            own(config or {}, files, run_dir)
            continue
        kind = type(logger).__name__
        publish = {"MLFlowLogger": _mlflow, "WandbLogger": _wandb, "TensorBoardLogger": _tensorboard}  # fmt: skip
        for cls in type(logger).__mro__:  # Lightning's classes (and subclasses of them)
            if cls.__module__.startswith("pytorch_lightning.loggers") and cls.__name__ in publish:
                kind = cls.__name__
                break
        if kind in publish:
            publish[kind](logger, config or {}, run_dir, results, pictures)


def _relative(path: Path, run_dir: Path) -> Path:
    return path.relative_to(run_dir)


def _mlflow(logger: Any, config: dict, run_dir: Path, results: Path, pictures: list[Path]) -> None:
    client, run_id = logger.experiment, logger.run_id
    client.log_dict(run_id, config, "config.yaml")
    if results.is_file():
        client.log_artifact(run_id, str(results))
    for path in pictures:
        folder = Path("pictures") / _relative(path, run_dir).parent
        client.log_artifact(run_id, str(path), folder.as_posix())


def _wandb(logger: Any, config: dict, run_dir: Path, results: Path, pictures: list[Path]) -> None:
    run = logger.experiment
    run.config.update({"config": config}, allow_val_change=True)
    for name in ("config.yaml", "results.json"):
        if (run_dir / name).is_file():
            run.save(str(run_dir / name), base_path=str(run_dir), policy="now")
    for path in pictures:
        key = "pictures/" + _relative(path, run_dir).with_suffix("").as_posix()
        logger.log_image(key=key, images=[str(path)])


def _tensorboard(logger: Any, config: dict, run_dir: Path, results: Path, pictures: list[Path]) -> None:  # fmt: skip
    import numpy as np
    from PIL import Image

    writer = logger.experiment
    writer.add_text("config", "```yaml\n" + _yaml(config) + "\n```")
    if results.is_file():
        writer.add_text("results", "```json\n" + json.dumps(json.loads(results.read_text()), indent=2) + "\n```")  # fmt: skip
    for path in pictures:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
        tag = "pictures/" + _relative(path, run_dir).with_suffix("").as_posix()
        writer.add_image(tag, array, dataformats="HWC")
    writer.flush()


def _yaml(config: dict) -> str:
    import yaml

    return yaml.safe_dump(config, sort_keys=False)
