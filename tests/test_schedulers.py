"""Schedules: warm-up + cosine against its formula, per-group rates, and the run length from Lightning."""

from __future__ import annotations

import math

import pytest
import torch

from tests.callbacks.finetune_toy import ToyData, make_task, trainer
from visionkit.errors import ConfigError
from visionkit.schedulers import WarmupCosineLR, build_scheduler


def _optimizer(*lrs: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    )


def _expected(step: int, total: int, warm: int, start: float, eta_min: float, lr: float) -> float:
    if step < warm:
        return lr * (start + (1 - start) * step / warm)
    t = (step - warm) / (total - warm)
    return eta_min + (lr - eta_min) * (1 + math.cos(math.pi * t)) / 2


@pytest.mark.parametrize(("warmup", "start", "eta_min"), [(0.1, 0.01, 0.0), (0.1, 0.2, 0.001), (0.0, 0.01, 0.0)])  # fmt: skip
def test_warmup_cosine_follows_its_formula_for_every_group(warmup, start, eta_min) -> None:
    opt = _optimizer(0.1, 0.01)  # e.g. a head and a backbone with layer decay
    total, warm = 40, round(warmup * 40)
    sched = WarmupCosineLR(opt, total_steps=total, warmup=warmup, start_factor=start, eta_min=eta_min)  # fmt: skip
    for step in range(total + 3):  # past the end it stays at eta_min
        for group, lr in zip(opt.param_groups, (0.1, 0.01), strict=True):
            want = _expected(min(step, total), total, warm, start, eta_min, lr)
            assert group["lr"] == pytest.approx(want, abs=1e-9), step
        opt.step()
        sched.step()


@pytest.mark.parametrize("rescaled_at", [10, 2])  # in the cosine phase; in the warm-up
def test_warmup_cosine_composes_with_a_group_rescaled_midway(rescaled_at: int) -> None:
    """Finetune schedules rescale a group's lr in place; the schedule carries the factor on,
    also across the switch from warm-up to cosine (step 4 here)."""
    opt = _optimizer(0.1)
    sched = WarmupCosineLR(opt, total_steps=20, warmup=0.2)
    for _ in range(rescaled_at):
        opt.step()
        sched.step()
    opt.param_groups[0]["lr"] *= 0.5
    for step in range(rescaled_at + 1, 16):
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * _expected(step, 20, 4, 0.01, 0.0, 0.1)), step  # fmt: skip


def test_warmup_cosine_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="total_steps must be >= 1"):
        WarmupCosineLR(_optimizer(0.1), total_steps=0)
    with pytest.raises(ConfigError, match="warmup in"):
        WarmupCosineLR(_optimizer(0.1), total_steps=10, warmup=1.0)
    with pytest.raises(ConfigError, match=r"scheduler\.interval"):
        build_scheduler({"_target_": "visionkit.WarmupCosineLR", "_partial_": True, "interval": "batch"}, _optimizer(0.1), len)  # fmt: skip


def test_build_scheduler_asks_the_run_length_only_when_needed() -> None:
    asked = []
    cosine = {"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 3}  # fmt: skip
    assert build_scheduler(cosine, _optimizer(0.1), asked.append)["interval"] == "epoch"
    given = {"_target_": "visionkit.WarmupCosineLR", "_partial_": True, "total_steps": 7}
    build_scheduler(given, _optimizer(0.1), asked.append)
    assert asked == []


def test_task_gives_the_schedule_the_runs_optimizer_steps() -> None:
    """3 epochs x 6 batches with gradient accumulation 2: 9 steps; the lr ends at eta_min."""
    spec = {"_target_": "visionkit.WarmupCosineLR", "_partial_": True, "warmup": 0.25, "interval": "step"}  # fmt: skip
    task = make_task(lr=0.1, scheduler=spec)
    fit = trainer([], 3, accumulate_grad_batches=2)
    fit.fit(task, datamodule=ToyData(n=24, batch_size=4))
    sched = fit.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 9 and fit.estimated_stepping_batches == 9
    assert all(g["lr"] == pytest.approx(0.0, abs=1e-12) for g in fit.optimizers[0].param_groups)


def test_warmup_cosine_resumes_from_its_state_dict() -> None:
    """A checkpoint mid-run (here, inside the warm-up) continues on the same curve."""
    opt = _optimizer(0.1, 0.02)
    sched = WarmupCosineLR(opt, total_steps=30, warmup=0.2)
    for _ in range(3):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    resumed_opt = _optimizer(0.1, 0.02)
    resumed = WarmupCosineLR(resumed_opt, total_steps=30, warmup=0.2)
    resumed_opt.load_state_dict(opt_state)
    resumed.load_state_dict(state)
    for _ in range(10):
        for o, s in ((opt, sched), (resumed_opt, resumed)):
            o.step()
            s.step()
        assert [g["lr"] for g in resumed_opt.param_groups] == pytest.approx([g["lr"] for g in opt.param_groups])  # fmt: skip


def test_task_without_a_run_length_says_what_to_set() -> None:
    """An epoch-stepped schedule that needs total_steps in a run bounded by steps only."""
    spec = {"_target_": "visionkit.WarmupCosineLR", "_partial_": True}
    fit = trainer([], -1, max_steps=2)
    with pytest.raises(
        ConfigError, match=r"run's length in epochs, but it is -1: set trainer\.max_epochs"
    ):
        fit.fit(make_task(scheduler=spec), datamodule=ToyData())
