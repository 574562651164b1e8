"""Training order and randomness as a function of (seed, epoch), so a resumed run sees an
uninterrupted run's epochs exactly.

A ``RandomSampler`` draws each epoch's order from a generator whose state lives on in memory: a
run resumed from a checkpoint starts a fresh generator and replays epoch 0's order. Here:

* ``EpochRandomSampler``: the order of epoch ``e`` is seeded by ``epoch_seed(seed, e)``; Lightning
  calls ``set_epoch`` on it before every training epoch (the first one after a resume included);
* ``EpochDataLoader``: starts its iterator (worker processes, their seeds, the first indices) at
  the first batch rather than at ``iter()``. Lightning calls ``iter()`` on the first epoch's
  loader before ``set_epoch`` and ``on_train_epoch_start``, so with ``num_workers > 0`` a plain
  DataLoader would take that epoch's order and worker seeds from the state before them;
* ``visionkit.callbacks.resuming.EpochSeed`` reseeds the loader's generator (worker seeds) and the
  global RNGs at the start of every training epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler

# distinct streams derived from one (seed, epoch): they never share a generator state
ORDER, LOADER, GLOBAL = 0, 1, 2


def epoch_seed(seed: int, epoch: int, stream: int = ORDER, rank: int = 0) -> int:
    """A 63-bit seed for ``stream`` of ``epoch`` on ``rank``: a pure function of its arguments."""
    state = np.random.SeedSequence([int(seed) & (2**63 - 1), int(epoch), int(stream), int(rank)])
    return int(state.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class EpochRandomSampler(RandomSampler):
    """A permutation of the dataset per epoch, seeded by ``(seed, epoch)``; see the module docstring.

    Being a ``RandomSampler``, Lightning still sees the loader as shuffled (and replaces the sampler
    by a ``DistributedSampler`` under DDP, which is also seeded by epoch).
    """

    def __init__(self, data_source: Sized, seed: int = 0) -> None:
        super().__init__(data_source)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before each training epoch (also the first one after a resume)."""
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, ORDER))
        yield from torch.randperm(len(self.data_source), generator=generator).tolist()


class EpochDataLoader(DataLoader):
    """A DataLoader whose iterator starts at the first batch; see the module docstring."""

    def __iter__(self) -> Iterator[Any]:
        return _StartsAtFirstBatch(super().__iter__)


class _StartsAtFirstBatch:
    """An iterator that calls ``start()`` for the real one when the first item is asked for."""

    def __init__(self, start: Callable[[], Iterator[Any]]) -> None:
        self._start: Callable[[], Iterator[Any]] | None = start
        self._iterator: Iterator[Any] | None = None

    def __iter__(self) -> _StartsAtFirstBatch:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            assert self._start is not None
            self._iterator, self._start = self._start(), None
        return next(self._iterator)
