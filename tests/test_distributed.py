"""visionkit.distributed without a process group: every helper is the one-process identity."""

from __future__ import annotations

import torch

from visionkit import distributed


def test_mean_over_ranks_alone_is_the_value_itself() -> None:
    value = torch.tensor(7.0, requires_grad=True)
    assert not distributed.is_initialized() and distributed.world_size() == 1
    assert distributed.mean_over_ranks(value) is value
