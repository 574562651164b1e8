"""``auto`` finetune schedule: picks a schedule from the train-set size and the domain similarity.

The rule (data size against ``small_data``; domain declared or estimated):

==============  ===================  =============================================
train set       domain similar       domain different
==============  ===================  =============================================
small           ``linear_probe``     ``multi_stage_probe``
large           ``partial`` (last    ``full``
                half of the stages)
same labels     ``evaluate``         (only when declared ``same_labels=true``)
==============  ===================  =============================================

The domain distance is how far the new data's per-layer BatchNorm batch statistics lie from the
pretrained running statistics: the KL divergence KL(N(batch mean, var) || N(running mean, var))
averaged over channels, then over layers (0 for the pretraining data itself).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from visionkit.callbacks.finetuning import FinetuneSchedule
from visionkit.errors import ConfigError

DOMAINS = ("estimate", "similar", "different")


@torch.no_grad()
def bn_domain_distance(backbone: nn.Module, batches: list[torch.Tensor]) -> float:
    """Mean over BatchNorm layers of the channel-mean KL(batch stats || running stats).

    The backbone runs in eval mode, so every layer sees inputs normalised as in pretraining.
    """
    layers = [m for m in backbone.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        raise ConfigError(
            "finetune.domain=estimate needs BatchNorm layers with running statistics in the "
            "backbone; declare finetune.domain=similar or different instead"
        )
    sums: dict[int, list[torch.Tensor]] = {}

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].transpose(0, 1).reshape(args[0].shape[1], -1).double()
        acc = sums.setdefault(id(module), [torch.zeros(x.shape[0], dtype=torch.float64)] * 3)
        sums[id(module)] = [acc[0] + x.shape[1], acc[1] + x.sum(1), acc[2] + (x * x).sum(1)]

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    was_training = backbone.training
    backbone.eval()
    try:
        for images in batches:
            backbone(images)
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    distances = []
    for m in layers:
        n, s, s2 = sums[id(m)]
        mean = s / n
        var = (s2 / n - mean * mean).clamp_min(0) + m.eps
        r_mean, r_var = m.running_mean.double(), m.running_var.double() + m.eps
        kl = 0.5 * (var / r_var + (mean - r_mean) ** 2 / r_var - 1 - torch.log(var / r_var))
        distances.append(kl.mean().item())
    return float(sum(distances) / len(distances))


def train_size(trainer: pl.Trainer) -> int:
    """Number of training samples of the trainer's datamodule."""
    dm = trainer.datamodule
    if dm is None:
        raise ConfigError("finetune=auto needs a datamodule or finetune.train_size")
    return len(dm.train_dataloader().dataset)


class AutoFinetune(FinetuneSchedule):
    """``auto``: chooses a schedule at setup (same on every rank), prints and records the reason.

    The choice and reason are in ``report``, in the checkpoint, and in results.json under the
    key ``finetune`` (``extra_results("run")``, collected by the train command).
    """

    name = "auto"

    def __init__(
        self,
        small_data: int = 2000,
        domain: str = "estimate",
        max_distance: float = 0.1,
        same_labels: bool = False,
        probe_batches: int = 4,
        partial_stages: int | None = None,
        train_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if domain not in DOMAINS:
            raise ConfigError(f"finetune.domain must be one of {DOMAINS}, got '{domain}'")
        self.small_data = small_data
        self.domain = domain
        self.max_distance = max_distance
        self.same_labels = same_labels
        self.probe_batches = probe_batches
        self.partial_stages = partial_stages
        self.train_size = train_size
        self.options = options
        self.inner: FinetuneSchedule | None = None

    def decide(self, size: int, distance: float | None, num_stages: int) -> dict[str, Any]:
        """The schedule (CALLBACKS spec) and a one-line reason for a train size and distance."""
        if distance is None:
            similar = self.domain == "similar"
            how = f"domain declared {self.domain}"
        else:
            similar = distance <= self.max_distance
            word = "similar" if similar else "different"
            how = f"domain {word} (BatchNorm statistics distance {distance:.3g} vs max {self.max_distance})"  # fmt: skip
        small = size < self.small_data
        amount = f"{size} training images ({'<' if small else '>='} small_data={self.small_data})"
        if self.same_labels and similar:
            spec, why = {"name": "evaluate"}, "same labels and similar data: no training needed"
        elif small and similar:
            spec, why = {"name": "linear_probe"}, "little data, similar domain: train only a linear head"  # fmt: skip
        elif small:
            spec, why = {"name": "multi_stage_probe"}, "little data, different domain: linear probe on features of several stages"  # fmt: skip
        elif similar:
            k = self.partial_stages or max(1, num_stages // 2)
            spec, why = {"name": "partial", "stages": k}, f"much data, similar domain: fine-tune the last {k} stages"  # fmt: skip
        else:
            spec, why = {"name": "full"}, "much data, different domain: fine-tune all stages"
        reason = f"{why}; {amount}, {how}"
        return {"schedule": spec["name"], "spec": spec, "reason": reason, "train_size": size,
                "domain_distance": distance}  # fmt: skip

    def _probe_batches(self, trainer: pl.Trainer) -> list[torch.Tensor]:
        batches = []
        for batch in trainer.datamodule.train_dataloader():
            images = batch[0] if isinstance(batch, list | tuple) else batch
            if isinstance(images, list | tuple):  # detection: list of images
                images = torch.stack([torch.as_tensor(i) for i in images[:1]])
            batches.append(images)
            if len(batches) >= self.probe_batches:
                break
        return batches

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        from visionkit.registries import CALLBACKS

        decision = None
        if trainer.is_global_zero:
            size = self.train_size if self.train_size is not None else train_size(trainer)
            distance = None
            if self.domain == "estimate":
                distance = bn_domain_distance(pl_module.backbone, self._probe_batches(trainer))
            num_stages = len(self.backbone_part_names(pl_module))
            decision = self.decide(size, distance, num_stages)
        decision = trainer.strategy.broadcast(decision, src=0)  # every rank runs the same schedule
        self.report = {**decision, "schedule": "auto", "choice": decision["schedule"]}
        if self.verbose and trainer.is_global_zero:
            print(f"finetune 'auto' chose '{decision['schedule']}': {decision['reason']}")
        self.inner = CALLBACKS.build({**self.options, "verbose": self.verbose, **decision["spec"]})
        self.inner.setup(trainer, pl_module, stage)
        self.inner.report = self.report

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.inner is not None:
            self.inner.on_fit_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.inner is not None:
            self.inner.on_train_epoch_start(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.inner is not None:
            self.inner.on_fit_end(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        inner = self.inner.state_dict() if self.inner is not None else {}
        return {**inner, "report": self.report}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = (state_dict.get("report") or {}).get("choice")
        if self.inner is not None and saved and saved != self.report.get("choice"):
            raise ConfigError(
                f"finetune=auto chose '{self.report.get('choice')}' but the checkpoint was "
                f"trained with '{saved}'; resume with finetune={saved}"
            )
        if self.inner is not None:
            self.inner.load_state_dict(state_dict)
