"""Epoch order and loader start: functions of (seed, epoch), whatever happened before."""

from __future__ import annotations

from pathlib import Path

import torch

from visionkit.data.shuffling import EpochDataLoader, EpochRandomSampler, epoch_seed


def test_epoch_seed_is_a_pure_function_with_distinct_streams() -> None:
    assert epoch_seed(7, 3) == epoch_seed(7, 3)
    seeds = {epoch_seed(7, e, s, r) for e in range(4) for s in range(3) for r in range(2)}
    assert len(seeds) == 24
    assert all(0 <= s < 2**63 for s in seeds)


def test_order_depends_on_seed_and_epoch_only() -> None:
    data = list(range(50))
    a = EpochRandomSampler(data, seed=3)
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert sorted(first) == sorted(second) == data and first != second
    # a fresh sampler (a resumed run) told the epoch gives the same order, in any call order
    b = EpochRandomSampler(data, seed=3)
    b.set_epoch(1)
    assert list(b) == second and list(b) == second
    b.set_epoch(0)
    assert list(b) == first
    # the oracle: torch.randperm with the documented seed formula
    g = torch.Generator().manual_seed(epoch_seed(3, 1))
    assert second == torch.randperm(50, generator=g).tolist()
    assert list(EpochRandomSampler(data, seed=4)) != first


def test_lightning_treats_the_train_loader_as_shuffled(tmp_path: Path) -> None:
    """So that under DDP Lightning swaps in a shuffling DistributedSampler (seeded by epoch too)."""
    from PIL import Image
    from pytorch_lightning.utilities.data import _is_dataloader_shuffled

    from visionkit.data.folders.imagefolder import ImageFolderDataModule

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / name / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), num_workers=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, EpochDataLoader) and isinstance(loader.sampler, EpochRandomSampler)
    assert _is_dataloader_shuffled(loader)
    assert not _is_dataloader_shuffled(dm.val_dataloader())


class _CountingSampler(EpochRandomSampler):
    started = 0

    def __iter__(self):
        type(self).started += 1
        yield from super().__iter__()


def test_loader_starts_at_the_first_batch_not_at_iter() -> None:
    """set_epoch between iter() and the first batch counts (Lightning's first-epoch order)."""
    data = list(range(12))
    sampler = _CountingSampler(data, seed=5)
    loader = EpochDataLoader(data, sampler=sampler, batch_size=12, num_workers=1)
    iterator = iter(loader)
    assert _CountingSampler.started == 0  # no worker started, no index drawn yet
    sampler.set_epoch(2)
    (batch,) = list(iterator)
    expected = EpochRandomSampler(data, seed=5)
    expected.set_epoch(2)
    assert batch.tolist() == list(expected)
