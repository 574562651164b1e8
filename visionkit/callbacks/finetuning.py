"""Freeze schedules for transfer learning, correct under DDP, resumable from checkpoints.

A schedule decides, per epoch, which parts of the task train: the last ``k`` backbone stages
(``task.backbone.stages``, via ``task.named_parts()``), the neck and the head. Frozen parameters
get ``requires_grad=False``, so autograd computes no backbone gradient in a frozen epoch.

DDP only all-reduces the parameters that required grad when it wrapped the model (Lightning's
``BackboneFinetuning`` silently lets later-unfrozen weights diverge across ranks). At every phase
change the schedule re-wraps the LightningModule in a fresh ``DistributedDataParallel`` (whose
constructor broadcasts rank 0's weights and builds a reducer for exactly the trainable set), on
all ranks at the same epoch, so no rank waits for another and no ``find_unused_parameters`` is
needed.

Options shared by all schedules: ``bn`` (``train``; ``frozen``: BatchNorm uses its running
statistics even after ``.train()``; ``frozen_affine``: also freezes its weight and bias),
``layer_decay`` (lr * decay^depth, depth counted from the head), ``backbone_lr_scale``. BatchNorm
layers of frozen stages always use running statistics (frozen means frozen).
"""

from __future__ import annotations

import gc
import math
from typing import Any

import pytorch_lightning as pl
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from visionkit.distributed import ddp_wrapper
from visionkit.errors import ConfigError
from visionkit.lightning_compat import rewrap_ddp

BN_POLICIES = ("train", "frozen", "frozen_affine")


def at_least(key: str, value: int, minimum: int) -> int:
    """``value`` of config key ``finetune.<key>``, or a ConfigError when below ``minimum``."""
    if value < minimum:
        raise ConfigError(f"finetune.{key} must be >= {minimum}, got {value}")
    return value


def _bn_eval_hook(module: nn.Module, args: Any) -> None:
    """Forward pre-hook: the BatchNorm normalises with (and keeps) its running statistics."""
    module.training = False


class FinetuneSchedule(pl.Callback):
    """Base schedule: subclasses say how many backbone stages (from the top) train at an epoch."""

    name = "full"
    train_neck = True

    def __init__(
        self,
        bn: str = "train",
        layer_decay: float | None = None,
        backbone_lr_scale: float = 1.0,
        verbose: bool = True,
    ) -> None:
        if bn not in BN_POLICIES:
            raise ConfigError(f"finetune.bn must be one of {BN_POLICIES}, got '{bn}'")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ConfigError(f"finetune.layer_decay must be in (0, 1], got {layer_decay}")
        if backbone_lr_scale < 0:
            raise ConfigError(f"finetune.backbone_lr_scale must be >= 0, got {backbone_lr_scale}")
        self.bn = bn
        self.layer_decay = layer_decay
        self.backbone_lr_scale = float(backbone_lr_scale)
        self.verbose = verbose
        self.phase: tuple[str, ...] | None = None  # trainable parts of the last applied epoch
        self.lr_factors: dict[str, float] = {}  # warm-up factors currently applied to groups
        self.report: dict[str, Any] = {"schedule": self.name}
        self._bn_hooks: dict[int, Any] = {}
        self._wrapped: frozenset[int] | None = None  # ids of trainable params DDP reduces

    # -- what a schedule decides ------------------------------------------------------------
    def trainable_stages(self, epoch: int, num_stages: int) -> int:
        """How many backbone stages, counted from the output side, train at ``epoch``."""
        return num_stages

    def warmup_factor(self, epoch: int) -> float:
        """Multiplier on the backbone learning rates at ``epoch`` (1 = no warm-up)."""
        return 1.0

    def neck_trains(self, epoch: int) -> bool:
        return self.train_neck

    # -- parts, phases, learning rates --------------------------------------------------------
    @staticmethod
    def backbone_part_names(task: Any) -> list[str]:
        """``backbone.0`` ... in input-to-output order (``backbone.rest`` excluded)."""
        return [n for n, _ in task.named_parts() if n.startswith("backbone.") and n != "backbone.rest"]  # fmt: skip

    def trainable_parts(self, task: Any, epoch: int) -> tuple[str, ...]:
        """Names of the parts (``task.named_parts()``) that train at ``epoch``."""
        stages = self.backbone_part_names(task)
        k = max(0, min(len(stages), self.trainable_stages(epoch, len(stages))))
        names = set(stages[len(stages) - k :])
        if k == len(stages) and k > 0:
            names.add("backbone.rest")
        if self.neck_trains(epoch):
            names.add("neck")
        names.add("head")
        return tuple(n for n, _ in task.named_parts() if n in names)

    def lr_scales(self, task: Any) -> dict[str, float]:
        """Per-part LR multipliers: ``backbone_lr_scale`` on the backbone, layer decay by depth."""
        names = [n for n, _ in task.named_parts()]
        order = [n for n in names if n != "backbone.rest"][::-1]  # head first
        if "backbone.rest" in names:
            order.append("backbone.rest")
        scales = {}
        for depth, name in enumerate(order):
            scale = self.layer_decay**depth if self.layer_decay else 1.0
            if name.startswith("backbone."):
                scale *= self.backbone_lr_scale
            scales[name] = scale
        return scales

    def apply_phase(self, task: Any, epoch: int) -> tuple[str, ...]:
        """Set ``requires_grad`` and BatchNorm behaviour for ``epoch``; returns trainable parts."""
        trainable = self.trainable_parts(task, epoch)
        bn_part: dict[int, str] = {}
        for name, part in task.named_parts():
            on = name in trainable
            for p in part.parameters():
                p.requires_grad_(on)
                if not on:
                    p.grad = None
            if name.startswith("backbone."):
                bn_part.update({id(m): name for m in part.modules()})
        for module in task.backbone.modules():
            if not isinstance(module, _BatchNorm):
                continue
            on = bn_part.get(id(module), "backbone.rest") in trainable
            self._set_bn_eval(module, not on or self.bn != "train")
            if self.bn == "frozen_affine":
                for p in module.parameters(recurse=False):
                    p.requires_grad_(False)
                    p.grad = None
        return trainable

    def _set_bn_eval(self, module: nn.Module, frozen: bool) -> None:
        handle = self._bn_hooks.get(id(module))
        if frozen and handle is None:
            self._bn_hooks[id(module)] = module.register_forward_pre_hook(_bn_eval_hook)
            module.eval()
        elif not frozen and handle is not None:
            handle.remove()
            del self._bn_hooks[id(module)]
            module.train(True)  # unfrozen in a training epoch: batch statistics again

    def _apply_lr_factors(self, trainer: pl.Trainer, epoch: int) -> None:
        """Scale backbone groups by the warm-up factor (relative to the factor already applied)."""
        factor = self.warmup_factor(epoch)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                name = group.get("name", "")
                if not name.startswith("backbone."):
                    continue
                old = self.lr_factors.get(name, 1.0)
                if not math.isclose(old, factor):
                    group["lr"] = group["lr"] * factor / old
                self.lr_factors[name] = factor

    # -- DDP ------------------------------------------------------------------------------
    def _trainable_ids(self, module: nn.Module) -> frozenset[int]:
        return frozenset(id(p) for p in module.parameters() if p.requires_grad)

    def _rewrap_ddp(self, trainer: pl.Trainer) -> None:
        """Re-wrap the module in DDP when the trainable set differs from the wrapped one."""
        ddp = ddp_wrapper(trainer)
        if ddp is None:
            return
        module = ddp.module
        wanted = self._trainable_ids(module)
        if wanted == self._wrapped:
            return
        strategy = trainer.strategy
        strategy.model = module  # drop the old wrapper (and its reducer's autograd hooks) first
        del ddp
        gc.collect()
        rewrap_ddp(strategy, module)  # broadcasts rank 0's weights and buffers
        self._wrapped = wanted

    # -- Lightning hooks ------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        for attr in ("named_parts", "backbone", "lr_scales"):
            if not hasattr(pl_module, attr):
                raise ConfigError(
                    f"finetune '{self.name}' needs a visionkit task (with backbone stages and "
                    f"param groups); {type(pl_module).__name__} has no '{attr}'"
                )
        pl_module.lr_scales.update(self.lr_scales(pl_module))
        self.phase = self.apply_phase(pl_module, 0)  # before DDP wraps and optimizers exist

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        ddp = ddp_wrapper(trainer)
        if ddp is not None:
            self._wrapped = self._trainable_ids(ddp.module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        phase = self.apply_phase(pl_module, epoch)
        if phase != self.phase and self.verbose and trainer.is_global_zero:
            print(f"finetune '{self.name}' epoch {epoch}: training {', '.join(phase)}")
        self.phase = phase
        self._rewrap_ddp(trainer)
        self._apply_lr_factors(trainer, epoch)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for handle in self._bn_hooks.values():
            handle.remove()
        self._bn_hooks.clear()

    def extra_results(self, stage: str) -> dict[str, Any]:
        """results.json's ``finetune`` (stage ``run``): the schedule followed (``auto``: its
        choice and reason)."""
        return {"finetune": self.report} if stage == "run" else {}

    def state_dict(self) -> dict[str, Any]:
        return {"phase": list(self.phase or ()), "lr_factors": dict(self.lr_factors), "report": self.report}  # fmt: skip

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.phase = tuple(state_dict.get("phase", ())) or None
        self.lr_factors = dict(state_dict.get("lr_factors", {}))
        self.report.update(state_dict.get("report", {}))


class Full(FinetuneSchedule):
    """``full``: every part trains from the first epoch."""

    name = "full"


class LinearProbe(FinetuneSchedule):
    """``linear_probe``: backbone and neck frozen throughout; only the head trains."""

    name = "linear_probe"
    train_neck = False

    def trainable_stages(self, epoch: int, num_stages: int) -> int:
        return 0


class FreezeUnfreeze(FinetuneSchedule):
    """``freeze_unfreeze``: backbone frozen for ``frozen_epochs``, then all parts train.

    After the unfreeze the backbone LR ramps up linearly over ``warmup_epochs`` epochs.
    """

    name = "freeze_unfreeze"

    def __init__(self, frozen_epochs: int = 1, warmup_epochs: int = 0, **options: Any) -> None:
        super().__init__(**options)
        if frozen_epochs < 0 or warmup_epochs < 0:
            raise ConfigError("finetune.frozen_epochs and finetune.warmup_epochs must be >= 0")
        self.frozen_epochs = frozen_epochs
        self.warmup_epochs = warmup_epochs

    def trainable_stages(self, epoch: int, num_stages: int) -> int:
        return 0 if epoch < self.frozen_epochs else num_stages

    def warmup_factor(self, epoch: int) -> float:
        since = epoch - self.frozen_epochs
        if since < 0 or since >= self.warmup_epochs:
            return 1.0
        return (since + 1) / (self.warmup_epochs + 1)


class Partial(FinetuneSchedule):
    """``partial``: the last ``stages`` backbone stages, the neck and the head train."""

    name = "partial"

    def __init__(self, stages: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.stages = at_least("stages", stages, 0)

    def trainable_stages(self, epoch: int, num_stages: int) -> int:
        return self.stages


class Gradual(FinetuneSchedule):
    """``gradual`` (ULMFiT): head first, then one more stage from the top every ``every`` epochs."""

    name = "gradual"

    def __init__(self, every: int = 1, **options: Any) -> None:
        super().__init__(**options)
        self.every = at_least("every", every, 1)

    def trainable_stages(self, epoch: int, num_stages: int) -> int:
        return epoch // self.every


class MultiStageProbe(LinearProbe):
    """``multi_stage_probe``: frozen backbone, one linear classifier on pooled features of several
    stages (the ``multi_stage`` head; another head is replaced by it, and the saved model spec too).
    """

    name = "multi_stage_probe"

    def __init__(self, stages: list[int] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.stages = stages

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            use_multi_stage_head(pl_module, self.stages, self.verbose and trainer.is_global_zero)
        super().setup(trainer, pl_module, stage)


def use_multi_stage_head(task: Any, stages: list[int] | None, verbose: bool = True) -> None:
    """Give ``task`` a ``multi_stage`` head (unless it has one) and record it in its model spec."""
    from visionkit.models.heads.multi_stage import MultiStageHead

    if isinstance(task.head, MultiStageHead):
        return
    spec: dict[str, Any] = {"name": "multi_stage"}
    if stages is not None:
        spec["stages"] = list(stages)
    old = task.hparams["model"].get("head")
    task.replace_head(spec)
    if verbose:
        print(f"finetune: head {old!r} replaced by {spec!r} (multi-stage linear probe)")


class Evaluate(FinetuneSchedule):
    """``evaluate``: no training (``trainer.should_stop`` before the first epoch); the pretrained
    model is tested as is."""

    name = "evaluate"
    train_neck = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            if trainer.min_epochs or trainer.min_steps:  # they would outweigh should_stop
                raise ConfigError(
                    "finetune 'evaluate' trains nothing; it cannot combine with "
                    f"trainer.min_epochs={trainer.min_epochs} or trainer.min_steps={trainer.min_steps}"
                )
            trainer.should_stop = True  # min_epochs is 0: the fit loop stops before epoch 0
            if self.verbose and trainer.is_global_zero:
                print("finetune 'evaluate': no training; the pretrained model is evaluated as is")
