"""Class-aware samplers against their definitions: class-balanced draws (each class equally often),
LVIS repeat factors and stochastic rounding; each epoch a function of (seed, epoch); under DDP
(ranks simulated, and 2 real gloo processes) distinct shards that together are the epoch's list;
Lightning keeps them."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from visionkit.data.samplers import ClassBalancedSampler, RepeatFactorSampler, build_sampler
from visionkit.errors import ConfigError

# 3 classes with 80, 15 and 5 samples
LABELS = [[0]] * 80 + [[1]] * 15 + [[2]] * 5
# detection: 100 images; category 2 in 1 image, category 1 in 10, category 0 in all but 1
IMAGES = [[0]] * 89 + [[0, 1]] * 10 + [[2]]


def epoch_list(sampler, epoch: int) -> list[int]:
    sampler.set_epoch(epoch)
    return list(sampler)


def test_class_balanced_draws_each_class_equally() -> None:
    sampler = ClassBalancedSampler(LABELS, 3, seed=0, num_samples=30000)
    drawn = Counter(LABELS[i][0] for i in epoch_list(sampler, 0))
    for c in range(3):  # binomial sd ~ 82: 5 sd either way
        assert abs(drawn[c] - 10000) < 410, drawn
    assert len(sampler) == 30000


def test_repeat_factors_follow_lvis() -> None:
    t = 0.05
    sampler = RepeatFactorSampler(IMAGES, 3, seed=0, threshold=t)
    f = [99 / 100, 10 / 100, 1 / 100]  # fraction of images containing each category
    expected_cat = [max(1.0, math.sqrt(t / fc)) for fc in f]
    assert sampler.category_factors == pytest.approx(expected_cat)
    per_image = [max(expected_cat[c] for c in classes) for classes in IMAGES]
    assert sampler.repeat_factors.tolist() == pytest.approx(per_image)
    assert len(sampler) == round(sum(per_image))
    # stochastic rounding: image 99 (r = sqrt(5) = 2.236) appears 2 or 3 times, ~2.236 on average
    counts = [Counter(epoch_list(sampler, e))[99] for e in range(400)]
    assert set(counts) <= {2, 3, 4}  # 4 only when the epoch list is cycled to its fixed length
    assert abs(sum(counts) / len(counts) - math.sqrt(5)) < 0.08
    ones = [Counter(epoch_list(sampler, 3))[i] for i in range(89)]
    assert max(ones) <= 2  # r = 1 images once (twice only if the list was cycled)


@pytest.mark.parametrize("make", [
    lambda **kw: ClassBalancedSampler(LABELS, 3, seed=7, **kw),
    lambda **kw: RepeatFactorSampler(IMAGES, 3, seed=7, threshold=0.05, **kw),
])  # fmt: skip
def test_each_epoch_is_a_function_of_seed_and_epoch(make) -> None:
    a, b = make(), make()
    assert epoch_list(a, 3) == epoch_list(b, 3)  # a fresh sampler (a resumed run) replays epoch 3
    assert epoch_list(a, 3) != epoch_list(a, 4)


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("make", [
    lambda **kw: ClassBalancedSampler(LABELS, 3, seed=1, **kw),
    lambda **kw: RepeatFactorSampler(IMAGES, 3, seed=1, threshold=0.05, **kw),
])  # fmt: skip
def test_ranks_get_distinct_shards_of_the_same_epoch(make, world: int) -> None:
    whole = epoch_list(make(rank=0, world_size=1), 2)
    shards = [epoch_list(make(rank=r, world_size=world), 2) for r in range(world)]
    size = math.ceil(len(whole) / world)
    assert all(len(s) == size == len(make(rank=r, world_size=world)) for r, s in enumerate(shards))
    # interleaved back, the shards are the epoch's list (padded by its start to a multiple)
    merged = [shards[i % world][i // world] for i in range(size * world)]
    assert merged == (whole + whole)[: size * world]


def _iterate_in_process_group(rank: int, world: int, port: int, out: str) -> None:
    """One rank of a real gloo group: the samplers built without rank/world, epoch 2, to JSON."""
    import json

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)  # fmt: skip
    try:
        lists = {name: epoch_list(make(), 2) for name, make in SHARDED.items()}
        Path(out, f"rank{rank}.json").write_text(json.dumps(lists))
        dist.barrier()
    finally:
        dist.destroy_process_group()


SHARDED = {
    "class_balanced": lambda **kw: ClassBalancedSampler(LABELS, 3, seed=1, **kw),
    "repeat_factor": lambda **kw: RepeatFactorSampler(IMAGES, 3, seed=1, threshold=0.05, **kw),
}


def test_in_a_real_process_group_each_rank_iterates_its_shard(tmp_path: Path) -> None:
    """2 processes, gloo: rank and world size come from torch.distributed when iterating, so the
    ranks' lists are the simulated shards: distinct, together the epoch's list."""
    import json

    import torch.multiprocessing as mp

    from tests.conftest import free_port

    mp.spawn(_iterate_in_process_group, args=(2, free_port(), str(tmp_path)), nprocs=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for name, make in SHARDED.items():
        whole = epoch_list(make(rank=0, world_size=1), 2)
        size = math.ceil(len(whole) / 2)
        assert [len(r[name]) for r in ranks] == [size, size]
        merged = [ranks[i % 2][name][i // 2] for i in range(2 * size)]
        assert merged == (whole + whole)[: 2 * size], name


def test_lightning_keeps_them_under_ddp() -> None:
    """Lightning swaps a non-DistributedSampler for its own under DDP; these are kept."""
    assert isinstance(ClassBalancedSampler(LABELS, 3), DistributedSampler)
    assert isinstance(RepeatFactorSampler(IMAGES, 3), DistributedSampler)


def test_datamodule_uses_the_configured_sampler(tmp_path: Path, formats) -> None:
    from tests.data.test_imbalance import _dm

    root = formats.coco(tmp_path / "coco", n=4)
    dm = _dm("detection", name="coco", root=str(root), sampler={"name": "repeat_factor", "threshold": 0.9})  # fmt: skip
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, RepeatFactorSampler)
    assert sampler.repeat_factors.tolist() == pytest.approx([math.sqrt(0.9 / 0.5)] * 4)
    with pytest.raises(ConfigError, match="class_balanced is for classification"):
        build_sampler("class_balanced", dm.datasets["train"], "detection", 2, 0)
    with pytest.raises(ConfigError, match=r"data\.sampler='nope'"):
        build_sampler("nope", dm.datasets["train"], "detection", 2, 0)
