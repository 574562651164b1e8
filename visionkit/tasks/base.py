"""BaseTask: the LightningModule every task builds on: backbone -> [neck] -> head from registries.

A task owns its optimizer parameter groups (one per backbone stage, then neck and head), so that
freeze schedules and layer-wise learning rates act on stages, never on parameter-name prefixes.
Everything needed to rebuild the model (model spec, label map, optimizer and scheduler configs) is
saved as hyperparameters, so a checkpoint alone restores it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from visionkit.errors import ConfigError
from visionkit.models.backbones.base import FeatureInfo
from visionkit.registries import BACKBONES, HEADS, NECKS
from visionkit.schedulers import build_scheduler


def plain(value: Any) -> Any:
    """OmegaConf containers -> plain dicts/lists (resolved), anything else unchanged."""
    if type(value).__name__ in ("DictConfig", "ListConfig"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


class BaseTask(pl.LightningModule):
    """Builds backbone, optional neck and head by registry name; owns optimizer param groups."""

    # the TASKS key of the subclass, recorded in checkpoints so `test`/`predict` can rebuild it
    task_name: str = ""

    def __init__(
        self,
        model: Mapping[str, Any],
        num_classes: int,
        label_map: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        **task_kwargs: Any,
    ) -> None:
        super().__init__()
        model = dict(plain(model))
        # pretrained weights are loaded once here; checkpoints carry the weights, not the path
        pretrained = None
        whole = model.pop("pretrained", None)  # the whole model's weights (model.pretrained)
        if isinstance(model["backbone"], Mapping):
            model["backbone"] = dict(model["backbone"])
            pretrained = model["backbone"].pop("pretrained", None)
        self.save_hyperparameters(
            {
                "model": model,
                "num_classes": num_classes,
                "label_map": plain(label_map),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                **{k: plain(v) for k, v in task_kwargs.items()},
            }
        )
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.backbone = BACKBONES.build(model["backbone"])
        neck_spec = model.get("neck")
        self.neck: nn.Module | None = (
            NECKS.build(neck_spec, self.backbone.feature_info) if neck_spec else None
        )
        self.head = self.build_head(model["head"], self.feature_info, num_classes)
        # per-group learning-rate multipliers, set by finetune schedules before optimizers exist
        self.lr_scales: dict[str, float] = {}
        if pretrained:
            from visionkit.models.pretrained import load_pretrained

            load_pretrained(self, pretrained)
        # what model.pretrained loaded (kept / re-initialised / matched), for results.json
        self.pretrained_results: dict[str, Any] = {}
        if whole:
            from visionkit.models.whole_pretrained import load_whole

            self.pretrained_results = load_whole(self, whole)

    # -- model ------------------------------------------------------------------------------
    @property
    def feature_info(self) -> list[FeatureInfo]:
        """What the head receives: the neck's outputs when there is a neck, else the backbone's."""
        return self.neck.feature_info if self.neck is not None else self.backbone.feature_info

    def build_head(self, spec: Any, feature_info: list[FeatureInfo], num_classes: int) -> nn.Module:
        """Build the head from HEADS; tasks with extra head arguments override this."""
        return HEADS.build(spec, feature_info, num_classes)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features, passed through the neck when there is one."""
        feats = self.backbone(images)
        return self.neck(feats) if self.neck is not None else feats

    @property
    def class_names(self) -> list[str]:
        label_map = self.hparams.get("label_map") or {}
        names = label_map.get("names")
        return list(names) if names else [str(i) for i in range(self.num_classes)]

    # -- evaluation -------------------------------------------------------------------------
    def eval_step(self, batch: Any, stage: str) -> Any:
        """One validation or test batch (``stage`` is ``"val"`` or ``"test"``). Tasks implement it, or
        override ``validation_step``/``test_step`` where the two differ (detection exports on test).
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement eval_step")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self.eval_step(batch, "test")

    # -- optimisation ------------------------------------------------------------------------
    def named_parts(self) -> Iterator[tuple[str, nn.Module]]:
        """The model's parts in input-to-output order: backbone stages, neck, head.

        Backbone parameters outside every stage (rare) form part ``backbone.rest``.
        """
        in_stages: set[int] = set()
        for i, stage in enumerate(self.backbone.stages):
            in_stages.update(id(p) for p in stage.parameters())
            yield f"backbone.{i}", stage
        rest = [p for p in self.backbone.parameters() if id(p) not in in_stages]
        if rest:
            holder = nn.Module()
            holder.params = nn.ParameterList(rest)
            yield "backbone.rest", holder
        if self.neck is not None:
            yield "neck", self.neck
        yield "head", self.head

    def param_groups(self) -> list[dict[str, Any]]:
        """One optimizer group per part with ``lr = base_lr * lr_scales.get(name, 1)``."""
        base_lr = (self.hparams.get("optimizer") or {}).get("lr", 1e-3)
        groups, seen = [], set()
        for name, part in self.named_parts():
            params = [p for p in part.parameters() if id(p) not in seen]
            seen.update(id(p) for p in params)
            if params:
                scale = self.lr_scales.get(name, 1.0)
                groups.append({"params": params, "name": name, "lr": base_lr * scale})
        return groups

    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        opt_cfg = self.hparams.get("optimizer")
        if not opt_cfg:
            raise ConfigError("no optimizer configured (config key 'optimizer')")
        optimizer = instantiate(opt_cfg)(self.param_groups())
        sched_cfg = self.hparams.get("scheduler")
        if not sched_cfg:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(sched_cfg, optimizer, self._run_length)}  # fmt: skip

    def _run_length(self, interval: str) -> int:
        """Epochs, or optimizer steps (Lightning's estimate: data, accumulation, devices), of the run."""
        trainer = self.trainer
        length = trainer.estimated_stepping_batches if interval == "step" else trainer.max_epochs
        if length is None or not math.isfinite(length) or length < 1:
            raise ConfigError(
                f"the scheduler needs the run's length in {interval}s, but it is {length}: set "
                "trainer.max_epochs (or trainer.max_steps with scheduler.interval=step)"
            )
        return int(length)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The task's name and, per registered part, the package and version that supplied it."""
        from visionkit import __version__
        from visionkit.checkpoints import META_KEY, suppliers_record

        parts = suppliers_record({"task": self.task_name, **self.hparams})
        checkpoint[META_KEY] = {"task": self.task_name, "version": __version__, "suppliers": parts}

    # -- results -----------------------------------------------------------------------------
    def extra_results(self, stage: str) -> dict[str, Any]:
        """Values for results.json beyond the logged scalars (per-class IoU, file paths, ...)."""
        return {}

    def save_figures(self, stage: str, output_dir: str) -> list[str]:
        """Write the run's pictures (PNG) for ``stage``; returns the paths written."""
        return []
