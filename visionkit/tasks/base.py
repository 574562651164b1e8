"""BaseTask: the LightningModule every task builds on: backbone -> [neck] -> head from registries.

A task owns its optimizer parameter groups (one per backbone stage, then neck and head), so that
freeze schedules and layer-wise learning rates act on stages, never on parameter-name prefixes.
Everything needed to rebuild the model (model spec, label map, optimizer and scheduler configs) is
saved as hyperparameters, so a checkpoint alone restores it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from visionkit.data.labels import LabelMap
from visionkit.data.transforms import Preprocess
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


def class_weight_list(class_weights: Any, num_classes: int) -> list[float]:
    """``task.class_weights`` as one float per class (the runner turns a method name into the list
    from the training data before the task is built); ConfigError for a name or a wrong length."""
    if isinstance(class_weights, str):
        raise ConfigError(
            f"task.class_weights={class_weights!r} needs the training data: build the task with "
            "visionkit.runner.build_task (or give one weight per class)"
        )
    weights = [float(w) for w in plain(class_weights)]
    if len(weights) != num_classes:
        raise ConfigError(f"task.class_weights has {len(weights)} values for {num_classes} classes")
    return weights


def build_criterion(loss: Any, class_weights: Any, num_classes: int, **kwargs: Any) -> nn.Module:
    """The LOSSES entry ``loss`` with ``kwargs`` and, given ``task.class_weights`` (one weight per
    class, :func:`class_weight_list`), ``weight=``."""
    from visionkit.registries import LOSSES

    if class_weights is None:
        return LOSSES.build(loss, **kwargs)
    weights = class_weight_list(class_weights, num_classes)
    try:
        return LOSSES.build(loss, weight=weights, **kwargs)
    except TypeError:
        raise ConfigError(
            f"task.loss={plain(loss)!r} takes no class weights (task.class_weights); "
            "cross_entropy, ce_dice and focal do"
        ) from None


class BaseTask(pl.LightningModule):
    """Builds backbone, optional neck and head by registry name; owns optimizer param groups."""

    # the TASKS key of the subclass, recorded in checkpoints so `test`/`predict` can rebuild it
    task_name: str = ""

    def __init__(
        self,
        model: Mapping[str, Any],
        num_classes: int,
        label_map: Mapping[str, Any] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
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
                "preprocessing": plain(preprocessing),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                **{k: plain(v) for k, v in task_kwargs.items()},
            }
        )
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        # the one place dataset category ids and names meet training indices
        self.label_map = (
            LabelMap.from_dict(plain(label_map))
            if label_map
            else LabelMap([str(i) for i in range(num_classes)])
        )
        if self.label_map.num_classes != num_classes:
            raise ConfigError(
                f"label map has {self.label_map.num_classes} classes but num_classes={num_classes}"
            )
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
        channels_last = model.get("channels_last", False)
        if not isinstance(channels_last, bool):
            raise ConfigError(f"model.channels_last must be true or false, got {channels_last!r}")
        if channels_last:  # NHWC weights: convolutions' outputs follow them (conf/train.yaml)
            self.to(memory_format=torch.channels_last)

    # -- model ------------------------------------------------------------------------------
    @property
    def feature_info(self) -> list[FeatureInfo]:
        """What the head receives: the neck's outputs when there is a neck, else the backbone's."""
        return self.neck.feature_info if self.neck is not None else self.backbone.feature_info

    def build_head(self, spec: Any, feature_info: list[FeatureInfo], num_classes: int) -> nn.Module:
        """Build the head from HEADS; tasks with extra head arguments override this."""
        return HEADS.build(spec, feature_info, num_classes)

    def replace_head(self, spec: Any) -> None:
        """A new head from ``spec``, recorded in the saved model spec (checkpoints rebuild it)."""
        self.head = self.build_head(spec, self.feature_info, self.num_classes)
        self.hparams["model"]["head"] = plain(spec)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features, passed through the neck when there is one."""
        feats = self.backbone(images)
        return self.neck(feats) if self.neck is not None else feats

    @property
    def class_names(self) -> list[str]:
        return list(self.label_map.names)

    def preprocess(self) -> Preprocess:
        """The evaluation preprocessing recorded at training (image size, mean/std, transforms)."""
        spec = self.hparams.get("preprocessing")
        if not spec:
            raise ConfigError(
                "this checkpoint records no preprocessing (saved by a visionkit before 0.1.0's "
                "self-describing checkpoints, or with a datamodule without preprocessing()); "
                "retrain it to predict or export with it"
            )
        return Preprocess(spec)

    # -- prediction (predict command, visionkit.load) ---------------------------------------------
    def predict_step(self, batch: Mapping[str, Any], batch_idx: int = 0) -> list[Any]:
        """A batch of visionkit.data.predict (images of any size) -> one typed result per image,
        in the original image's pixels with the dataset's ids (visionkit.predictions)."""
        outputs = self.predict_outputs(list(batch["images"]))
        return self.decode(outputs, list(batch["sizes"]), self.label_map, self.decode_options())

    def predict_outputs(self, images: list[torch.Tensor]) -> list[Any]:
        """The model's raw output per image (what an exported file returns too): images of one
        shape run as one batch, so a result never depends on the other images of its batch (a
        detector pads a batch to its largest image)."""
        from visionkit.data.predict import by_shape

        outputs: list[Any] = [None] * len(images)
        for indices in by_shape(images):
            for i, out in zip(indices, self.run_batch([images[i] for i in indices]), strict=True):
                outputs[i] = out
        return outputs

    # logits per pixel (semantic segmentation) rather than per image: the exported model resizes them
    dense_logits: bool = False

    def export_module(self) -> nn.Module:
        """images [N,3,H,W] -> logits [N,K] (``dense_logits``: [N,K,H,W]) without Lightning
        (visionkit.export); detection tasks override it."""
        from visionkit.export import LogitsModel

        return LogitsModel(self.backbone, self.neck, self.head, dense=self.dense_logits)

    def run_batch(self, images: list[torch.Tensor]) -> Any:
        """The model on images of one shape (stacked here; detectors take the list)."""
        return self(torch.stack(images).to(self.device))

    def decode_options(self) -> dict[str, Any]:
        """Task settings ``decode`` needs beyond the label map (thresholds), as plain data."""
        return {}

    @classmethod
    def decode(cls, outputs: list[Any], sizes: list[tuple[int, int]], label_map: LabelMap, options: Mapping[str, Any]) -> list[Any]:  # fmt: skip
        """Raw outputs per image (eager or exported) -> typed results at each original ``size``."""
        raise NotImplementedError(f"{cls.__name__} does not implement decode")

    # -- evaluation -------------------------------------------------------------------------
    def eval_step(self, batch: Any, stage: str) -> Any:
        """One validation or test batch (``stage`` is ``"val"`` or ``"test"``): :meth:`measure` into
        the task's ``val_metrics`` / ``test_metrics`` collections and its ``confusion`` matrix, then
        log the loss and the collection. Tasks whose evaluation differs override this (or
        ``validation_step``/``test_step``: detection exports on test)."""
        n = len(batch[0])
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        loss = self.measure(batch, metrics, self.confusion)
        self.log(f"{stage}/loss", loss, batch_size=n, sync_dist=True)
        self.log_dict(metrics, batch_size=n, prog_bar=stage == "val")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.eval_step(batch, "val")

    # the task's validation metric on other data (learning curves: a subset of training images)
    def measure(self, batch: Any, *metrics: Any) -> torch.Tensor | None:
        """Forward one batch and update each of ``metrics`` (torchmetrics objects built like
        :meth:`validation_metric`) with :meth:`metric_inputs`; returns the batch's loss (tasks
        whose model gives none in eval mode override this and return None). ``eval_step`` is built
        on it, so both measure the same thing."""
        images, targets = batch
        outputs = self(images)
        preds, labels = self.metric_inputs(outputs, targets)
        for metric in metrics:
            metric.update(preds, labels)
        return self.criterion(outputs, targets)

    def metric_inputs(self, outputs: Any, targets: Any) -> tuple[Any, Any]:
        """What the metrics compare: (predictions, labels) from the model's outputs and targets."""
        raise NotImplementedError(f"{type(self).__name__} does not implement metric_inputs")

    def validation_metric(self) -> Any:
        """The torchmetrics object (or collection) validation updates; :meth:`metric_pass` clones it."""
        return self.val_metrics

    def metric_values(self, computed: Mapping[str, Any]) -> dict[str, float]:
        """Scalar results of ``validation_metric().compute()`` under their bare names (``acc``)."""
        return {k.rsplit("/", 1)[-1]: float(v) for k, v in computed.items() if v.numel() == 1}

    @torch.no_grad()
    def metric_pass(self, batches: Iterable[Any]) -> dict[str, float]:
        """The validation metric and loss over ``batches`` in eval mode, on a fresh copy of the
        metric: the validation's own state is untouched. Keys are bare names (``acc``, ``loss``)."""
        metric = self.validation_metric().clone()
        metric.reset()
        was_training = self.training
        self.eval()
        total, count, seen = 0.0, 0, 0
        try:
            for batch in batches:
                batch = self.transfer_batch_to_device(batch, self.device, 0)
                n = len(batch[0])
                loss = self.measure(batch, metric)
                seen += n
                if loss is not None:
                    total, count = total + float(loss) * n, count + n
            values = self.metric_values(metric.compute()) if seen else {}
        finally:
            self.train(was_training)
        if count:
            values["loss"] = total / count
        return values

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
        self._check_fused_step(optimizer)
        sched_cfg = self.hparams.get("scheduler")
        if not sched_cfg:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": build_scheduler(sched_cfg, optimizer, self._run_length)}  # fmt: skip

    def _check_fused_step(self, optimizer: Any) -> None:
        """A fused step (``optimizer.fused=true``, the shipped AdamW and SGD) unscales 16-bit AMP's
        gradients itself, so Lightning cannot clip them first: with a gradient scaler
        (``trainer.precision=16-mixed`` on a GPU) and ``trainer.gradient_clip_val`` that is one
        ConfigError naming the keys here, not Lightning's error after the first backward."""
        trainer = self._trainer
        if trainer is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
            return
        if getattr(trainer.precision_plugin, "scaler", None) is not None and trainer.gradient_clip_val:  # fmt: skip
            raise ConfigError(
                f"optimizer.fused=true cannot be combined with trainer.precision=16-mixed and "
                f"trainer.gradient_clip_val={trainer.gradient_clip_val}: the fused step unscales "
                "the gradients itself, so they cannot be clipped before it; set "
                "optimizer.fused=false (or drop the clipping)"
            )

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
        checkpoint[META_KEY] = {
            "task": self.task_name,
            "version": __version__,
            "suppliers": parts,
            "model": plain(self.hparams["model"]),
            "num_classes": self.num_classes,
            "label_map": self.label_map.to_dict(),
            "preprocessing": plain(self.hparams.get("preprocessing")),
        }

    # -- results -----------------------------------------------------------------------------
    def extra_results(self, stage: str) -> dict[str, Any]:
        """Values for results.json beyond the logged scalars (per-class IoU, file paths, ...);
        stage ``run``: what ``model.pretrained`` loaded (``pretrained``). Subclasses extend it."""
        if stage == "run" and self.pretrained_results:
            return {"pretrained": self.pretrained_results}
        return {}

    def save_figures(self, stage: str, output_dir: str) -> list[str]:
        """Write the run's pictures (PNG) for ``stage``; returns the paths written."""
        return []
