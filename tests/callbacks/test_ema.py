"""EMA follows its formula (decay warm-up, every N steps, start step) on a toy model; validation,
the saved checkpoints and test use the average; a resumed run continues the same average."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from visionkit.callbacks.ema import EMA
from visionkit.errors import ConfigError


class Toy(pl.LightningModule):
    """Linear + BatchNorm (an averaged buffer); records the weights it sees in val and test."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
        self.seen: dict[str, list[dict[str, torch.Tensor]]] = {"val": [], "test": []}

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.net(batch[0]) - 1).pow(2).mean()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        if batch_idx == 0:
            self.seen["val"].append(self.weights())
        self.log("val/score", -float(self.net(batch[0]).pow(2).mean()))

    def test_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        if batch_idx == 0:
            self.seen["test"].append(self.weights())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.2, momentum=0.5)

    def loader(self) -> DataLoader:
        data = torch.randn(24, 3, generator=torch.Generator().manual_seed(1))
        return DataLoader(TensorDataset(data), batch_size=4)

    train_dataloader = val_dataloader = test_dataloader = loader


class Recorder(pl.Callback):
    """The raw weights after every optimizer step (before the EMA callback reads them)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps.append(pl_module.weights())


def expected_average(steps: list[dict], decay: float, tau: float, every: int, start: int) -> dict:
    """The EMA by its definition: first update copies, update k mixes with decay*(1-exp(-k/tau))."""
    avg, k = None, 0
    for i, w in enumerate(steps):
        if i < start or (i - start) % every:
            continue
        if avg is None:
            avg = {n: t.clone() for n, t in w.items()}
        else:
            d = decay * (1 - math.exp(-k / tau)) if tau else decay
            avg = {n: (d * a + (1 - d) * w[n]) if a.is_floating_point() else w[n] for n, a in avg.items()}  # fmt: skip
        k += 1
    return avg


def fit(tmp_path: Path, ema: EMA, epochs: int, resume: Path | None = None, **kw):
    model, recorder = Toy(), Recorder()
    ckpt = ModelCheckpoint(dirpath=tmp_path, filename="best", monitor="val/score", mode="max")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)  # as conf/callbacks
    trainer = pl.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder, ema, ckpt, last], default_root_dir=tmp_path,
        num_sanity_val_steps=0, **kw,
    )  # fmt: skip
    trainer.fit(model, ckpt_path=resume)
    return model, recorder, trainer


def close(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)  # fmt: skip


@pytest.mark.parametrize("decay,tau,every,start", [(0.9, 0.0, 1, 0), (0.8, 3.0, 2, 1)])
def test_average_follows_the_formula_and_is_what_validation_and_checkpoints_see(
    tmp_path: Path, decay: float, tau: float, every: int, start: int
) -> None:
    ema = EMA(decay=decay, warmup_tau=tau, every_n_steps=every, start_step=start)
    model, recorder, _ = fit(tmp_path, ema, epochs=2)
    steps = recorder.steps  # 6 steps per epoch
    assert len(steps) == 12
    final = expected_average(steps, decay, tau, every, start)
    assert not close(final, steps[-1])  # the average differs from the raw weights
    assert close(model.weights(), final)  # after fit the model holds the average
    assert close(model.seen["val"][0], expected_average(steps[:6], decay, tau, every, start))
    assert close(model.seen["val"][1], final)
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert close(last["state_dict"], final)  # what predict/export/visionkit.load read
    assert close(last["current_model_state"], steps[-1])  # what a resume trains on
    assert ema.extra_results("val")["ema"]["updates"] == len(range(start, 12, every))


def test_test_after_fit_uses_the_averaged_best_checkpoint(tmp_path: Path) -> None:
    ema = EMA(decay=0.9)
    model, recorder, trainer = fit(tmp_path, ema, epochs=2)
    best = trainer.checkpoint_callback.best_model_path
    trainer.test(model, ckpt_path=best, verbose=False, weights_only=True)
    saved = torch.load(best, weights_only=True)["state_dict"]
    assert close(model.seen["test"][0], saved)
    # the best checkpoint holds the average that validation saw, never raw weights
    assert any(close(saved, v) for v in model.seen["val"])
    assert not any(close(saved, s) for s in recorder.steps)


def test_resume_continues_the_same_average(tmp_path: Path) -> None:
    straight, _, _ = fit(tmp_path / "a", EMA(decay=0.8, warmup_tau=2.0), epochs=3)
    fit(tmp_path / "b", EMA(decay=0.8, warmup_tau=2.0), epochs=1)
    ema = EMA(decay=0.8, warmup_tau=2.0)
    resumed, _, _ = fit(tmp_path / "b", ema, epochs=3, resume=tmp_path / "b" / "last.ckpt")
    assert ema.num_updates == 18
    assert close(resumed.weights(), straight.weights())


def test_with_gradient_accumulation_it_updates_once_per_optimizer_step(tmp_path: Path) -> None:
    ema = EMA(decay=0.9)
    fit(tmp_path, ema, epochs=1, accumulate_grad_batches=2)
    assert ema.num_updates == 3


@pytest.mark.parametrize("kw", [{"decay": 1.0}, {"every_n_steps": 0}, {"warmup_tau": -1}])
def test_bad_settings_are_config_errors(kw: dict) -> None:
    with pytest.raises(ConfigError, match=r"callbacks\.ema"):
        EMA(**kw)


def test_ddp_every_rank_validates_the_same_average(tmp_path: Path) -> None:
    """2 CPU processes (gloo) under a freeze schedule: the average (BatchNorm buffers included)
    is the same on both ranks at each validation; without the sync it is not (the control)."""
    import json
    import os
    import subprocess
    import sys

    out = tmp_path / "ranks.json"
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).parent / "ema_ddp_check.py"), str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = json.loads(out.read_text())
    assert [r["val_equal"] for r in records["ema"]] == [True, True], records
    assert not all(r["raw_equal"] for r in records["ema"]), records  # the shards do differ
    assert not all(r["val_equal"] for r in records["nosync"]), records
