"""Class-aware training samplers (``data.sampler``): ``class_balanced`` (classification) and
``repeat_factor`` (LVIS, detection and instance segmentation).

Like :class:`~visionkit.data.shuffling.EpochRandomSampler`, each epoch's indices are a pure
function of ``(seed, epoch)`` (``set_epoch``, called by Lightning before every epoch, also the
first one after a resume), so a resumed run sees the uninterrupted run's epochs. Under DDP every
rank computes the same global list of the epoch and takes ``list[rank::world_size]`` (the list is
first padded by its own beginning to a multiple of the world size, as DistributedSampler does):
the shards are distinct and together cover the list. The samplers are ``DistributedSampler``
subclasses so Lightning leaves them in place (``use_distributed_sampler`` stays on for the
default sampler); rank and world size are read from ``torch.distributed`` when iterating.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from visionkit import distributed
from visionkit.data.shuffling import ORDER, epoch_seed
from visionkit.errors import ConfigError


class _EpochShardedSampler(DistributedSampler):
    """The (seed, epoch) -> global list -> rank shard machinery; subclasses give ``epoch_indices``."""

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:  # no DistributedSampler.__init__: it needs a process group even on one device
        self.total = int(num_samples)
        self.seed, self.epoch = int(seed), 0
        self._rank, self._world = rank, world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _placement(self) -> tuple[int, int]:
        world = self._world if self._world is not None else distributed.world_size()
        rank = self._rank if self._rank is not None else distributed.rank()
        return rank, world

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch, ORDER))

    def epoch_indices(self) -> list[int]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        indices = self.epoch_indices()
        rank, world = self._placement()
        padded = math.ceil(len(indices) / world) * world
        indices = (indices * math.ceil(padded / max(len(indices), 1)))[:padded]
        return iter(indices[rank::world])

    def __len__(self) -> int:
        return math.ceil(self.total / self._placement()[1])


class ClassBalancedSampler(_EpochShardedSampler):
    """Each draw picks a class uniformly among those present, then a sample of it: sample ``i`` has
    probability ``1 / (K_present * n_{c_i})``; ``num_samples`` draws (default: the dataset size)
    with replacement per epoch. A multi-label sample counts for its rarest class."""

    def __init__(
        self,
        sample_classes: Sequence[Sequence[int]],
        num_classes: int,
        seed: int = 0,
        num_samples: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        counts = torch.zeros(num_classes, dtype=torch.float64)
        for classes in sample_classes:
            for c in classes:
                counts[c] += 1
        present = int((counts > 0).sum())
        weights = []
        for i, classes in enumerate(sample_classes):
            if not classes:
                raise ConfigError(f"data.sampler=class_balanced: training sample {i} has no class")
            weights.append(max(1.0 / (present * float(counts[c])) for c in classes))
        self.weights = torch.tensor(weights, dtype=torch.float64)
        super().__init__(num_samples or len(weights), seed, rank, world_size)

    def epoch_indices(self) -> list[int]:
        return torch.multinomial(self.weights, self.total, replacement=True, generator=self.generator()).tolist()  # fmt: skip


class RepeatFactorSampler(_EpochShardedSampler):
    """LVIS repeat-factor sampling (Gupta et al. 2019): category ``c`` in a fraction ``f(c)`` of the
    training images gets ``r(c) = max(1, sqrt(threshold / f(c)))``, an image the largest ``r`` of
    its categories (1 without any). Each epoch an image is repeated ``floor(r)`` times plus once
    more with probability ``frac(r)`` (stochastic rounding), then the list is shuffled. The
    epoch length is fixed at ``round(sum r)`` (the list is cut or cycled to it), so Lightning's
    batch count and step-based schedules stay right."""

    def __init__(
        self,
        sample_classes: Sequence[Sequence[int]],
        num_classes: int,
        seed: int = 0,
        threshold: float = 0.001,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if threshold <= 0:
            raise ConfigError(f"data.sampler.threshold={threshold}: must be > 0")
        n_images = max(len(sample_classes), 1)
        counts = [0] * num_classes
        for classes in sample_classes:
            for c in set(classes):
                counts[c] += 1
        category_factor = [
            max(1.0, math.sqrt(threshold / (n / n_images))) if n else 1.0 for n in counts
        ]
        self.category_factors = category_factor
        self.repeat_factors = torch.tensor(
            [max((category_factor[c] for c in classes), default=1.0) for classes in sample_classes],
            dtype=torch.float64,
        )
        super().__init__(round(float(self.repeat_factors.sum())), seed, rank, world_size)

    def epoch_indices(self) -> list[int]:
        g = self.generator()
        whole = self.repeat_factors.floor()
        extra = torch.rand(len(whole), generator=g, dtype=torch.float64) < (self.repeat_factors - whole)  # fmt: skip
        repeats = (whole + extra.double()).long()
        indices = torch.repeat_interleave(torch.arange(len(whole)), repeats)
        indices = indices[torch.randperm(len(indices), generator=g)].tolist()
        if not indices:
            return []
        return (indices * math.ceil(self.total / len(indices)))[: self.total]


SAMPLERS = {"class_balanced": ClassBalancedSampler, "repeat_factor": RepeatFactorSampler}
FOR_TASKS = {
    "class_balanced": ("classification",),
    "repeat_factor": ("detection", "instance_segmentation"),
}


def build_sampler(spec: Any, dataset: Any, task: str, num_classes: int, seed: int) -> Any:
    """``data.sampler``: a name (``class_balanced``, ``repeat_factor``) or ``{name: ..., **kw}``;
    a ``_target_`` mapping builds another sampler ``(sample_classes, num_classes, seed, **kw)``."""
    from omegaconf import OmegaConf

    from visionkit.data.imbalance import sample_classes

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    classes = sample_classes(dataset, task)
    if "_target_" in spec:
        from hydra.utils import get_method

        factory = get_method(spec.pop("_target_"))
        return factory(classes, num_classes, seed=seed, **spec)
    name = spec.pop("name", None)
    if name not in SAMPLERS:
        raise ConfigError(
            f"data.sampler={name!r}: choose one of {', '.join(SAMPLERS)} (or a mapping with "
            "_target_)"
        )
    if task not in FOR_TASKS[name]:
        raise ConfigError(
            f"data.sampler={name} is for {' and '.join(FOR_TASKS[name])}, not task '{task}'"
        )
    try:
        return SAMPLERS[name](classes, num_classes, seed=seed, **spec)
    except TypeError as exc:
        raise ConfigError(f"data.sampler ({name}): {exc}") from None
