"""Config checks that run before any data is read: trainer keys and types, optimizer values,
and the paths checked before torch is imported."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import CLI, IMPORT_TIMES, split_imports
from visionkit import runner
from visionkit.errors import ConfigError


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_epochs", "abc", "trainer.max_epochs='abc': expected int or null, got str"),
        ("max_epochs", 1.5, "trainer.max_epochs=1.5: expected int or null, got float"),
        ("limit_train_batches", "all", "trainer.limit_train_batches='all': expected int or float"),
        ("limit_val_batches", "half", "trainer.limit_val_batches='half': expected int or float or null"),
        ("deterministic", "maybe", "trainer.deterministic='maybe': expected bool or 'warn' or null"),
        ("precision", "half", "trainer.precision='half': expected 64 or 32"),
        ("benchmark", 1, "trainer.benchmark=1: expected bool or null, got int"),
        ("max_epoch", 3, "trainer.max_epoch is not a pytorch_lightning.Trainer argument; did you mean trainer.max_epochs?"),
    ],
)  # fmt: skip
def test_trainer_keys_are_checked(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        runner.check_trainer_config(OmegaConf.create({"max_epochs": 2, key: value}))
    assert str(err.value).startswith(message)


def test_good_trainer_config_passes_and_bad_values_are_one_config_error(tmp_path: Path) -> None:
    good = {"max_epochs": 2, "limit_val_batches": 0.5, "precision": "32-true", "devices": 1,
            "accelerator": "cpu", "deterministic": "warn", "max_time": None, "gradient_clip_val": 1}  # fmt: skip
    runner.check_trainer_config(OmegaConf.create(good))
    cfg = OmegaConf.create({"trainer": {**good, "accelerator": "abacus"},
                            "seed": 0, "paths": {"output_dir": str(tmp_path)}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"^trainer config \(keys trainer\.\*\): .*abacus"):
        runner.build_trainer(cfg, callbacks=[])


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lr": -1}, "optimizer.lr=-1 is invalid for torch.optim.AdamW: Invalid learning rate: -1"),
        ({"lr": "fast"}, "optimizer.lr='fast' must be a number (torch.optim.AdamW)"),
        ({"weight_decay": -0.5}, "optimizer.weight_decay=-0.5 is invalid for torch.optim.AdamW"),
        ({"betas": [0.9, 1.5]}, "optimizer.betas=[0.9, 1.5] is invalid for torch.optim.AdamW"),
        ({"_target_": "torch.optim.Adamm"}, "optimizer._target_='torch.optim.Adamm' cannot be built"),
        ({"fused": True, "foreach": True}, "optimizer.fused=True is invalid for torch.optim.AdamW: `fused` and `foreach` cannot be `True` together"),
        ({"_target_": "torch.optim.Adamax", "fused": True}, "optimizer.fused=True is invalid for torch.optim.Adamax: Adamax.__init__() got an unexpected keyword argument 'fused' (drop it: ~optimizer.fused)"),
    ],
)  # fmt: skip
def test_optimizer_values_are_checked_before_training(change: dict, message: str) -> None:
    cfg = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, **change}
    with pytest.raises(ConfigError) as err:
        runner.check_optimizer_config(OmegaConf.create(cfg))
    assert str(err.value).startswith(message)


def test_good_optimizer_configs_pass() -> None:
    for cfg in ({"_target_": "torch.optim.AdamW", "lr": 3e-3, "betas": [0.9, 0.99]},
                {"_target_": "torch.optim.SGD", "lr": 0.05, "momentum": 0.9, "nesterov": True}):  # fmt: skip
        runner.check_optimizer_config(OmegaConf.create({**cfg, "_partial_": True}))


@pytest.mark.parametrize(
    "command, message",
    [(["test"], "checkpoint not found: {ckpt} (config key ckpt_path)"),
     (["predict", "input=a.png"], "no such model file: {ckpt}")],
)  # fmt: skip
def test_a_missing_checkpoint_fails_before_torch_is_imported(
    command: list[str], message: str, cli: CLI, tmp_path: Path
) -> None:
    """runner.check_paths runs first in setup: one error line, without importing torch or
    Lightning (seconds per failing run)."""
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    ckpt = tmp_path / "missing.ckpt"
    proc = cli(*command, f"ckpt_path={ckpt}", "hydra.run.dir=r", env=IMPORT_TIMES)
    imported, stderr = split_imports(proc.stderr)
    assert proc.returncode == 2
    assert stderr.strip() == "error: " + message.format(ckpt=ckpt)
    assert "omegaconf" in imported and not {"torch", "pytorch_lightning"} & imported
