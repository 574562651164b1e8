"""Checkpoint writing and restoring pieces of an exact resume (the whole path: commands/test_resume)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from visionkit.callbacks.resuming import AtomicCheckpointIO, ModelCheckpoint


def test_checkpoint_io_replaces_the_file_whole_or_not_at_all(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 18, "w": torch.ones(3)}, path)
    assert io.load_checkpoint(path, weights_only=True)["global_step"] == 18
    with pytest.raises(Exception, match=r"lambda|pickle"):  # fails halfway through torch.save
        io.save_checkpoint({"global_step": 36, "w": torch.zeros(3), "bad": lambda: 0}, path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["global_step"] == 18 and torch.equal(ckpt["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_best_is_remembered_after_a_change_of_directory(tmp_path: Path) -> None:
    old = ModelCheckpoint(dirpath=tmp_path / "old", monitor="val/acc", mode="max")
    old.best_model_score = torch.tensor(0.9)
    old.best_model_path = str(tmp_path / "old" / "best.ckpt")
    old.best_k_models = {old.best_model_path: old.best_model_score}
    new = ModelCheckpoint(dirpath=tmp_path / "new", monitor="val/acc", mode="max")
    new.load_state_dict(old.state_dict())
    assert new.dirpath != old.dirpath
    assert float(new.best_model_score) == pytest.approx(0.9)
    assert new.best_model_path == old.best_model_path
    assert new.best_k_models == old.best_k_models
    # checkpoints written with Lightning's class (runs from before) restore into ours
    lightning = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, monitor="val/acc", mode="max")
    assert new.state_key == lightning.state_key
