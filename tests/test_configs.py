"""Every YAML in conf/ (and the example plugin's) composes, and what it describes instantiates.

Each config group maps to the registry or library that instantiates it; a new group without a
mapping fails here, so no config goes untested.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from visionkit.plugins import conf_dir, load_all, plugin_config_dirs, register_config_search_path
from visionkit.schedulers import build_scheduler

CONF = conf_dir()
PRIMARY = {"train", "predict", "export", "analyze", "browse", "stats"}
TASKS_ORDER = ["classification", "semantic_segmentation", "detection", "instance_segmentation"]


def all_yamls() -> list[tuple[Path, str]]:
    """(root, relative path without .yaml) for visionkit's and the plugins' config files."""
    found = []
    for root in [CONF, *plugin_config_dirs()]:
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root).with_suffix("").as_posix()
            if not rel.startswith("hydra/"):
                found.append((root, rel))
    return found


def compose_cfg(overrides: list[str], config_name: str = "train") -> DictConfig:
    GlobalHydra.instance().clear()
    register_config_search_path()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_struct(cfg, False)
    cfg.paths.output_dir = "unused-output-dir"
    for key in [k for k in cfg if k == "hydra"]:
        del cfg[key]
    return cfg


def fake_datamodule(num_classes: int = 3) -> Any:
    from visionkit.data.labels import LabelMap

    label_map = LabelMap(ids=[1, 3, 5][:num_classes], names=["a", "b", "c"][:num_classes])
    return SimpleNamespace(num_classes=num_classes, label_map=label_map)


def build_task(cfg: DictConfig) -> torch.nn.Module:
    from visionkit import runner

    return runner.build_task(cfg, fake_datamodule())


def check_model_part(group: str, name: str) -> None:
    """A backbone/neck/head config builds inside a task of the first kind that accepts it."""
    errors = []
    for task in TASKS_ORDER:
        cfg = compose_cfg([f"task={task}", f"{group}={name}"])
        try:
            build_task(cfg)
            return
        except (TypeError, ValueError, KeyError) as exc:
            errors.append(f"{task}: {type(exc).__name__}: {exc}")
    pytest.fail(f"{group}={name} builds in no task:\n" + "\n".join(errors))


def check(rel: str) -> None:
    if "/" not in rel:
        assert rel in PRIMARY, f"unexpected primary config {rel}.yaml"
        cfg = compose_cfg(["ckpt_path=x"] if rel != "train" else [], config_name=rel)
        assert cfg.task.name in TASKS_ORDER
        return
    group, name = rel.rsplit("/", 1)
    if group in ("model/backbone", "model/neck", "model/head"):
        check_model_part(group, name)
        return
    if group in ("layers", "upsamplers"):  # specs referenced from other configs: build alone
        from visionkit.registries import LAYERS, UPSAMPLERS

        spec = OmegaConf.load(CONF / f"{rel}.yaml")
        x = torch.randn(2, 8, 16, 16)
        module = LAYERS.build(spec, 8, 8) if group == "layers" else UPSAMPLERS.build(spec, 8, 8, 2)
        assert module(x).shape[:2] == (2, 8)
        return
    optional = group in ("model/norm", "model/act")  # not in the defaults list: appended with +
    cfg = compose_cfg([f"{'+' if optional else ''}{group}={name}"])
    from visionkit.registries import ACTIVATIONS, CALLBACKS, DATASETS, NORMS, TRANSFORMS

    if group == "task" or group == "experiment":
        build_task(cfg)
        DATASETS.get(cfg.data.name)  # its datamodule exists
    elif group == "model":
        build_task(cfg)
    elif group == "model/norm":
        assert cfg.model.norm.name == name
        out = NORMS.build(cfg.model.norm, 8)(torch.randn(2, 8, 4, 4))
        assert out.shape == (2, 8, 4, 4)
        build_task(cfg)  # the choice reaches the backbone
    elif group == "model/act":
        assert cfg.model.act.name == name
        ACTIVATIONS.build(cfg.model.act)(torch.randn(2, 8, 4, 4))
        build_task(cfg)
    elif group == "transforms":
        for spec in OmegaConf.load(CONF / f"{rel}.yaml").values():
            for item in spec if isinstance(spec, list) else [spec]:
                TRANSFORMS.build(item)
    elif group == "data":
        cfg.data.num_workers = 0
        supported = DATASETS.get(cfg.data.name).SUPPORTED_TASKS
        task = cfg.task.name if cfg.task.name in supported else supported[0]
        dm = DATASETS.build(_fill_missing(cfg.data), task=task)
        assert hasattr(dm, "train_dataloader")
    elif group == "optimizer":
        opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
        assert isinstance(opt, torch.optim.Optimizer)
    elif group == "scheduler":
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        built = build_scheduler(
            OmegaConf.to_container(cfg.scheduler, resolve=True), opt, lambda _: 10
        )
        assert isinstance(built["scheduler"], torch.optim.lr_scheduler.LRScheduler)
    elif group == "trainer":
        import pytorch_lightning as pl

        kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
        kwargs.update(accelerator="cpu", logger=False, enable_checkpointing=False)
        if kwargs.get("strategy") == "ddp":
            kwargs.update(devices=1)
        pl.Trainer(**kwargs)
    elif group == "callbacks":  # ours by CALLBACKS name, Lightning's by _target_
        from visionkit.runner import build_callbacks

        assert len(build_callbacks(cfg)) == sum(v is not None for v in cfg.callbacks.values())
    elif group == "logger":
        if name in ("mlflow", "wandb"):  # the `loggers` extra
            pytest.importorskip(name)
        # MLflow's logger opens its store (a sqlite file under the output dir) when built
        with tempfile.TemporaryDirectory() as cwd, contextlib.chdir(cwd):
            for node in cfg[group].values():
                if node is not None:
                    instantiate(node)
    elif group == "finetune":
        CALLBACKS.build(cfg.finetune)
    elif group == "hparams_search":
        check_search_space(name)
    elif group == "tta":
        from visionkit.tta import build_tta

        assert build_tta(cfg.tta).views
    else:
        pytest.fail(f"no instantiation check for config group '{group}' ({rel}.yaml)")


def check_search_space(name: str) -> None:
    """An Optuna search space: every swept key exists, and each choice builds the task."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    task = name if name in TASKS_ORDER else "classification"
    GlobalHydra.instance().clear()
    register_config_search_path()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", [f"task={task}", f"hparams_search={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("VisionkitOptunaSweeper")
    lines = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    assert lines, f"hparams_search/{name}.yaml searches nothing"
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        assert OmegaConf.select(cfg, key) is not None, f"hparams_search/{name}: no key {key}"
        values = list(override.sweep_iterator()) if override.is_discrete_sweep() else []
        for value in values:
            build_task(compose_cfg([f"task={task}", f"{key}={value}"]))


def _fill_missing(node: DictConfig) -> DictConfig:
    """Mandatory values (``???``, e.g. a user's file paths) get dummy paths: construct, do not read."""
    for key in list(node.keys()):
        if OmegaConf.is_missing(node, key):
            node[key] = f"/nonexistent/{key}"
    return node


@pytest.mark.parametrize("root,rel", all_yamls(), ids=lambda v: v if isinstance(v, str) else "")
def test_config_composes_and_instantiates(root: Path, rel: str) -> None:
    load_all()
    check(rel)


def group_names(group: str) -> list[str]:
    """The config names of ``group`` in visionkit's conf/ and the plugins' config folders."""
    return sorted({rel.rsplit("/", 1)[1] for _, rel in all_yamls() if rel.startswith(f"{group}/")})


@pytest.mark.parametrize("data", group_names("data"))
@pytest.mark.parametrize("task", group_names("task"))
def test_no_task_pushes_a_key_onto_a_datamodule(task: str, data: str) -> None:
    """Every task config with every data config: the datamodule builds, or the only refusal is
    that its format cannot serve the task (never an unknown key set by the task config)."""
    from visionkit.errors import ConfigError
    from visionkit.registries import DATASETS

    load_all()
    cfg = compose_cfg([f"task={task}", f"data={data}"])
    cfg.data.num_workers = 0
    try:
        dm = DATASETS.build(_fill_missing(cfg.data), task=cfg.task.name)
    except ConfigError as exc:
        assert f"cannot serve task '{cfg.task.name}'" in str(exc), str(exc)
        assert cfg.task.name not in DATASETS.get(cfg.data.name).SUPPORTED_TASKS
        return
    assert dm.task == cfg.task.name


@pytest.mark.parametrize(
    ("overrides", "size"),
    [([], 64), (["data=coco"], 512), (["data=coco", "data.image_size=96"], 96)],
)
@pytest.mark.parametrize("task", ["detection", "instance_segmentation"])
def test_detector_image_size_follows_the_data(task: str, overrides: list[str], size: int) -> None:
    """model.head.min_size defaults to data.image_size; on shapes a 64 px image stays 64 px."""
    load_all()
    cfg = compose_cfg([f"task={task}", *overrides])
    transform = build_task(cfg).head.detector.transform
    assert (transform.min_size, transform.max_size) == ((size,), round(size * 1333 / 800))
    resized, _ = transform([torch.rand(3, cfg.data.image_size, cfg.data.image_size)])
    assert resized.image_sizes == [(size, size)]
