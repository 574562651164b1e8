"""Freeze schedules: trainable parts and LRs per epoch, BatchNorm policies, resume, real 2-rank DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from finetune_toy import ToyData, make_task, trainer

from visionkit.callbacks.finetuning import FinetuneSchedule
from visionkit.errors import ConfigError
from visionkit.plugins import load_builtins
from visionkit.registries import CALLBACKS

load_builtins()
HERE = Path(__file__).resolve().parent
ALL = ("backbone.0", "backbone.1", "backbone.2", "head")
EPOCHS = 4

# schedule spec -> trainable parts at epochs 0..3 (3-stage backbone, no neck)
EXPECTED = {
    "full": {"spec": {}, "parts": [ALL] * EPOCHS},
    "linear_probe": {"spec": {}, "parts": [("head",)] * EPOCHS},
    "multi_stage_probe": {"spec": {}, "parts": [("head",)] * EPOCHS},
    "freeze_unfreeze": {"spec": {"frozen_epochs": 2}, "parts": [("head",)] * 2 + [ALL] * 2},
    "partial": {"spec": {"stages": 2}, "parts": [("backbone.1", "backbone.2", "head")] * EPOCHS},
    "gradual": {
        "spec": {"every": 1},
        "parts": [("head",), ("backbone.2", "head"), ("backbone.1", "backbone.2", "head"), ALL],
    },
}


def schedule_names() -> list[str]:
    """Every registered schedule with per-epoch phases (``auto``/``evaluate`` tested apart)."""
    return [
        n
        for n in CALLBACKS.names()
        if isinstance(CALLBACKS.get(n), type)
        and issubclass(CALLBACKS.get(n), FinetuneSchedule)
        and n not in ("auto", "evaluate")
    ]


class Recorder(pl.Callback):
    """Per epoch: trainable parts, group LRs, which parts changed and which got gradients."""

    def __init__(self) -> None:
        self.epochs: list[dict] = []

    def on_train_epoch_start(self, trainer, task) -> None:
        parts = dict(task.named_parts())
        self.before = {n: [p.detach().clone() for p in m.parameters()] for n, m in parts.items()}
        trainable = tuple(n for n, m in parts.items() if all(p.requires_grad for p in m.parameters()))  # fmt: skip
        lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
        self.epochs.append({"trainable": trainable, "lrs": lrs, "grads": set()})

    def on_after_backward(self, trainer, task) -> None:
        for name, part in task.named_parts():
            if any(p.grad is not None for p in part.parameters()):
                self.epochs[-1]["grads"].add(name)

    def on_train_epoch_end(self, trainer, task) -> None:
        changed = {
            n for n, m in task.named_parts()
            if any(not torch.equal(a, b) for a, b in zip(self.before[n], m.parameters(), strict=True))
        }  # fmt: skip
        self.epochs[-1]["changed"] = changed


def fit(schedule: FinetuneSchedule, epochs: int = EPOCHS, task=None, **trainer_kw) -> tuple:
    task = task or make_task()
    recorder = Recorder()
    trainer([schedule, recorder], epochs, limit_train_batches=2, **trainer_kw).fit(
        task, datamodule=ToyData()
    )
    return task, recorder.epochs


def test_every_schedule_has_expectations() -> None:
    assert set(schedule_names()) == set(EXPECTED), "add new schedules to EXPECTED"


@pytest.mark.parametrize("name", schedule_names())
def test_trainable_parts_per_epoch(name: str) -> None:
    spec = EXPECTED[name]
    task, epochs = fit(CALLBACKS.build({"name": name, **spec["spec"]}))
    if name == "multi_stage_probe":
        assert type(task.head).__name__ == "MultiStageHead"
        assert task.hparams["model"]["head"]["name"] == "multi_stage"
    for epoch, (record, parts) in enumerate(zip(epochs, spec["parts"], strict=True)):
        assert record["trainable"] == parts, f"{name} epoch {epoch}"
        # frozen parts neither change nor even receive a gradient; trainable ones do change
        assert record["grads"] == set(parts), f"{name} epoch {epoch}"
        assert record["changed"] == set(parts), f"{name} epoch {epoch}"


def test_gradual_lrs_follow_layer_decay_and_backbone_scale() -> None:
    base, decay, scale = 0.1, 0.5, 0.2
    _, epochs = fit(CALLBACKS.build({"name": "full", "layer_decay": decay, "backbone_lr_scale": scale}), 1)  # fmt: skip
    depth = {"head": 0, "backbone.2": 1, "backbone.1": 2, "backbone.0": 3}
    for name, lr in epochs[0]["lrs"].items():
        expected = base * decay ** depth[name] * (scale if name.startswith("backbone") else 1)
        assert lr == pytest.approx(expected), name


def test_freeze_unfreeze_warmup_composes_with_a_scheduler() -> None:
    """Backbone LR = base * gamma^epoch (StepLR) * warm-up ramp after the unfreeze."""
    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.5}  # fmt: skip
    schedule = CALLBACKS.build({"name": "freeze_unfreeze", "frozen_epochs": 1, "warmup_epochs": 2})
    _, epochs = fit(schedule, task=make_task(scheduler=step))
    warm = [1.0, 1 / 3, 2 / 3, 1.0]
    for e, record in enumerate(epochs):
        assert record["lrs"]["head"] == pytest.approx(0.1 * 0.5**e)
        assert record["lrs"]["backbone.0"] == pytest.approx(0.1 * 0.5**e * warm[e]), e


def bn_stats(task) -> list[torch.Tensor]:
    return [b.clone() for n, b in task.backbone.named_buffers() if "running" in n]


class TrainCalls(pl.Callback):
    """Calls ``.train()`` before every step, as user code and Lightning's loops do."""

    def on_train_batch_start(self, trainer, task, batch, batch_idx) -> None:
        task.train()


@pytest.mark.parametrize("policy", ["train", "frozen", "frozen_affine"])
def test_batchnorm_policy(policy: str) -> None:
    task = make_task()
    before = bn_stats(task)
    bns = [m for m in task.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_weights = [m.weight.detach().clone() for m in bns]
    schedule = CALLBACKS.build({"name": "full", "bn": policy})
    trainer([schedule, TrainCalls()], 2, limit_train_batches=2).fit(task, datamodule=ToyData())
    same_stats = all(torch.equal(a, b) for a, b in zip(before, bn_stats(task), strict=True))
    assert same_stats == (policy != "train")
    same_affine = all(torch.equal(a, m.weight) for a, m in zip(bn_weights, bns, strict=True))
    assert same_affine == (policy == "frozen_affine")
    assert all(m.weight.requires_grad == (policy != "frozen_affine") for m in bns)


def test_frozen_stage_batchnorm_keeps_running_stats() -> None:
    task = make_task()
    before = bn_stats(task)
    fit(CALLBACKS.build("linear_probe"), 1, task=task)
    assert all(torch.equal(a, b) for a, b in zip(before, bn_stats(task), strict=True))


def test_evaluate_trains_nothing() -> None:
    task = make_task()
    before = [p.detach().clone() for p in task.parameters()]
    _, epochs = fit(CALLBACKS.build("evaluate"), 3, task=task)
    assert epochs == []
    assert all(torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))


def test_bad_options_raise_config_errors() -> None:
    with pytest.raises(ConfigError, match="bn"):
        CALLBACKS.build({"name": "full", "bn": "sometimes"})
    with pytest.raises(ConfigError, match="every"):
        CALLBACKS.build({"name": "gradual", "every": 0})


def test_resume_mid_schedule_equals_uninterrupted_run(tmp_path: Path) -> None:
    """Stop after 2 of 4 epochs (mid warm-up, after the unfreeze), resume: identical weights."""

    def schedule():
        return CALLBACKS.build(
            {"name": "freeze_unfreeze", "frozen_epochs": 1, "warmup_epochs": 2, "layer_decay": 0.7}
        )

    step = {"_target_": "torch.optim.lr_scheduler.StepLR", "_partial_": True, "step_size": 1, "gamma": 0.7}  # fmt: skip
    pl.seed_everything(0, verbose=False)
    full, _ = fit(schedule(), 4, task=make_task(scheduler=step))
    pl.seed_everything(0, verbose=False)
    first = make_task(scheduler=step)
    t = trainer([schedule()], 2, limit_train_batches=2)
    t.fit(first, datamodule=ToyData())
    t.save_checkpoint(tmp_path / "mid.ckpt")
    pl.seed_everything(0, verbose=False)
    resumed = make_task(scheduler=step)
    recorder = Recorder()
    trainer([schedule(), recorder], 4, limit_train_batches=2).fit(
        resumed, datamodule=ToyData(), ckpt_path=tmp_path / "mid.ckpt"
    )
    assert [r["trainable"] for r in recorder.epochs] == [ALL, ALL]
    for (name, a), b in zip(full.named_parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b), name


def test_ddp_two_ranks_stay_identical_through_each_unfreeze(tmp_path: Path) -> None:
    """2 CPU processes (gloo): ours keeps the ranks identical before and after each unfreeze;
    Lightning's BackboneFinetuning fails the same check (so the check can fail)."""
    out = tmp_path / "ranks.json"
    proc = subprocess.run(
        [sys.executable, str(HERE / "ddp_check.py"), "gradual,lightning", str(out), "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())
    ours = records["gradual"]
    assert [r["backbone_trainable"] for r in ours] == [0, 3, 6]  # one more stage per epoch
    assert all(r["start_equal"] and r["end_equal"] for r in ours), ours
    lightning = records["lightning"]
    assert lightning[0]["end_equal"]
    assert not lightning[1]["end_equal"], lightning


def test_multi_stage_probe_checkpoint_rebuilds_its_head(tmp_path: Path) -> None:
    """The head swap is recorded in the hyperparameters, so `test`/`predict` rebuild it."""
    task = make_task()
    t = trainer([CALLBACKS.build("multi_stage_probe")], 1, limit_train_batches=1)
    t.fit(task, datamodule=ToyData())
    t.save_checkpoint(tmp_path / "probe.ckpt")
    restored = type(task).load_from_checkpoint(tmp_path / "probe.ckpt", map_location="cpu")
    assert type(restored.head).__name__ == "MultiStageHead"
    for (name, a), b in zip(task.state_dict().items(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
