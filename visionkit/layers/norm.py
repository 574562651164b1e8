"""NORMS ``(num_channels, **kw)`` on NCHW: bn, ln, in, gn, sn (SwitchableNorm), frozen_bn, sync_bn, none.

Each entry is checked in tests against a direct computation of its definition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from visionkit.errors import ConfigError
from visionkit.registries import NORMS

GN_GROUP_CHOICES = (32, 16, 8, 4, 2, 1)


@NORMS.register("bn", aliases=("batchnorm",))
def batch_norm(num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> nn.BatchNorm2d:  # fmt: skip
    """BatchNorm: statistics over (N, H, W) per channel; running statistics for eval."""
    return nn.BatchNorm2d(num_channels, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("sync_bn", aliases=("syncbatchnorm",))
def sync_batch_norm(num_channels: int, eps: float = 1e-5, momentum: float = 0.1) -> nn.SyncBatchNorm:  # fmt: skip
    """BatchNorm whose statistics are reduced across DDP processes (plain BN when not distributed)."""
    return nn.SyncBatchNorm(num_channels, eps=eps, momentum=momentum)


@NORMS.register("ln", aliases=("layernorm",))
class LayerNorm2d(nn.GroupNorm):
    """LayerNorm for NCHW: per sample over (C, H, W), with a per-channel affine (GroupNorm, G=1)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(1, num_channels, eps=eps, affine=affine)


@NORMS.register("in", aliases=("instancenorm",))
def instance_norm(num_channels: int, eps: float = 1e-5, affine: bool = True) -> nn.InstanceNorm2d:
    """InstanceNorm: per sample and channel over (H, W), learned affine; same in train and eval."""
    return nn.InstanceNorm2d(num_channels, eps=eps, affine=affine, track_running_stats=False)


def default_groups(num_channels: int) -> int:
    """The largest of 32, 16, 8, 4, 2, 1 that divides ``num_channels`` (GroupNorm default)."""
    return next(g for g in GN_GROUP_CHOICES if num_channels % g == 0)


@NORMS.register("gn", aliases=("groupnorm",))
def group_norm(num_channels: int, num_groups: int | None = None, eps: float = 1e-5, affine: bool = True) -> nn.GroupNorm:  # fmt: skip
    """GroupNorm over (C/G, H, W) per sample; ``num_groups`` defaults to ``default_groups(C)``."""
    groups = default_groups(num_channels) if num_groups is None else num_groups
    if not isinstance(groups, int) or groups < 1 or num_channels % groups:
        raise ConfigError(
            f"gn: num_groups={groups!r} must be a positive int dividing num_channels={num_channels} "
            f"(leave num_groups unset to pick {default_groups(num_channels)})"
        )
    return nn.GroupNorm(groups, num_channels, eps=eps, affine=affine)


@NORMS.register("none", aliases=("identity",))
class NoNorm(nn.Identity):
    """No normalisation; builders treat it as 'no norm' (so convolutions keep their bias)."""

    def __init__(self, num_channels: int = 0, **kw: object) -> None:
        super().__init__()
        if kw:
            raise ConfigError(f"norm 'none' takes no arguments, got {sorted(kw)}")


@NORMS.register("frozen_bn", aliases=("frozenbatchnorm",))
class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine (buffers, no gradients); ``.train()`` changes nothing.

    ``from_bn`` copies a trained BatchNorm's statistics and affine.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_channels))
        self.register_buffer("bias", torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        frozen = cls(bn.num_features, bn.eps)
        if bn.affine:
            frozen.weight.copy_(bn.weight.detach())
            frozen.bias.copy_(bn.bias.detach())
        if bn.running_mean is not None:
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        return frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


@NORMS.register("sn", aliases=("switchnorm", "switchable"))
class SwitchableNorm2d(nn.Module):
    """SwitchableNorm (Luo et al., 2019): a learned softmax mix of the IN, LN and BN statistics.

    ``mean_weight`` and ``var_weight`` each hold 3 logits ordered (IN, LN, BN); mean and variance
    are mixed separately. The BN part keeps running statistics (BatchNorm ``momentum``, unbiased
    running variance) used in eval. Computed from one pass of per-(sample, channel) moments.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.num_channels, self.eps, self.momentum = num_channels, eps, momentum
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        var_in, mean_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        sq_in = var_in + mean_in * mean_in  # E[x^2] per (sample, channel)
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = sq_in.mean(1, keepdim=True) - mean_ln * mean_ln
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = sq_in.mean(0, keepdim=True) - mean_bn * mean_bn
            with torch.no_grad():
                count = n * h * w
                unbiased = var_bn.flatten() * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean_bn.flatten().to(self.running_mean.dtype), self.momentum)  # fmt: skip
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean_bn = self.running_mean.view(1, c, 1, 1).to(x.dtype)
            var_bn = self.running_var.view(1, c, 1, 1).to(x.dtype)
        wm = F.softmax(self.mean_weight, 0).to(x.dtype)
        wv = F.softmax(self.var_weight, 0).to(x.dtype)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        scale = (var + self.eps).rsqrt()
        if self.weight is not None:
            scale = scale * self.weight.view(1, c, 1, 1).to(x.dtype)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias.view(1, c, 1, 1).to(x.dtype)
        return torch.addcmul(shift, x, scale)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"
