"""LevelShared: convolutions shared by the levels, norms per level; the former layout still loads."""

import pytest
import torch
from torch import nn

from visionkit.layers import ConvNormAct, LevelShared
from visionkit.layers.fuse import fuse_conv_bn


def stack() -> nn.Sequential:
    return nn.Sequential(ConvNormAct(4, 4, 3, norm="bn", act="relu"), ConvNormAct(4, 4, 3, norm="bn", act="relu", bias=True))  # fmt: skip


def test_levels_share_convolutions_and_keep_their_own_norms() -> None:
    torch.manual_seed(0)
    shared = LevelShared(stack, 3)
    for level in (1, 2):
        for i in (0, 1):
            assert shared[level][i].conv.weight is shared[0][i].conv.weight
            assert shared[level][i].norm is not shared[0][i].norm
        assert shared[level][1].conv.bias is shared[0][1].conv.bias
    # the optimizer sees each shared weight once: 2 convs (+1 bias) and 3 x 2 norms (weight, bias)
    assert len(list(shared.parameters())) == 3 + 3 * 2 * 2
    # in training each level's norms see only its own maps: their running means differ by level
    shared.train()
    low, high = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4) + 5.0
    shared(low, 0), shared(high, 1)
    first = [shared[level][0].norm.running_mean for level in range(3)]
    assert not torch.allclose(first[0], first[1])
    torch.testing.assert_close(first[2], torch.zeros(4))  # level 2 never ran


def test_per_level_norms_fold_into_each_level_and_the_former_layout_loads() -> None:
    torch.manual_seed(0)
    shared = LevelShared(stack, 2)
    shared.train()
    for _ in range(3):
        shared(torch.randn(2, 4, 8, 8), 0), shared(torch.randn(2, 4, 4, 4) * 3 + 1, 1)
    shared.eval()
    x = torch.randn(1, 4, 6, 6)
    fused = fuse_conv_bn(shared)
    for level in (0, 1):
        torch.testing.assert_close(fused(x, level), shared(x, level), rtol=1e-4, atol=1e-5)
    assert fused[0][0].conv.weight is not fused[1][0].conv.weight  # each level's own folded conv
    # a checkpoint of one shared stack (keys "<layer>.<name>") loads into every level
    old = stack().eval()
    old.load_state_dict({k: torch.randn_like(v) if v.is_floating_point() else v for k, v in old.state_dict().items()})  # fmt: skip
    with torch.no_grad():
        old[0].norm.running_var.abs_()
        old[1].norm.running_var.abs_()
    fresh = LevelShared(stack, 2).eval()
    fresh.load_state_dict(old.state_dict())
    for level in (0, 1):
        torch.testing.assert_close(fresh(x, level), old(x))


def test_a_stack_without_an_index_of_its_own_loads_both_layouts() -> None:
    # a ConvNormAct per level: this layout's keys ("0.conv.weight") look like the former layout's
    # of a Sequential stack, so the former layout is told apart by the keys, not by their form
    def one() -> nn.Module:
        return ConvNormAct(4, 4, 3, norm="bn", act="relu")

    torch.manual_seed(0)
    trained = LevelShared(one, 2)
    trained.train()
    trained(torch.randn(2, 4, 8, 8), 0), trained(torch.randn(2, 4, 4, 4) * 3 + 1, 1)
    trained.eval()
    fresh = LevelShared(one, 2).eval()
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(1, 4, 6, 6)
    for level in (0, 1):
        torch.testing.assert_close(fresh(x, level), trained(x, level))
    assert not torch.equal(fresh[0].norm.running_mean, fresh[1].norm.running_mean)
    old = one().eval()
    old.load_state_dict(trained[1].state_dict())
    fresh.load_state_dict(old.state_dict())
    for level in (0, 1):
        torch.testing.assert_close(fresh(x, level), old(x))


def test_levels_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="levels=0"):
        LevelShared(stack, 0)
