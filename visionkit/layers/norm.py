"""NORMS ``(num_channels, **kw)`` on NCHW: bn, ln, in, gn, sn (SwitchableNorm), frozen_bn, sync_bn, none.

Each entry is checked in tests against a direct computation of its definition.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from visionkit.distributed import is_distributed
from visionkit.errors import ConfigError
from visionkit.registries import NORMS

GN_GROUP_CHOICES = (32, 16, 8, 4, 2, 1)


@NORMS.register("bn", aliases=("batchnorm",))
def batch_norm(num_channels: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True) -> nn.BatchNorm2d:  # fmt: skip
    """BatchNorm: statistics over (N, H, W) per channel; running statistics for eval."""
    return nn.BatchNorm2d(num_channels, eps=eps, momentum=momentum, affine=affine)


@NORMS.register("sync_bn", aliases=("syncbatchnorm",))
class SyncBatchNorm2d(nn.SyncBatchNorm):
    """BatchNorm whose statistics are reduced across DDP processes; plain BN when not distributed.

    torch's SyncBatchNorm refuses CPU tensors; on CPU (gloo) the sums are all-reduced here with
    the differentiable ``torch.distributed.nn`` all_reduce, so CPU DDP runs work and are testable.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed(self.process_group) and x.device.type == "cpu"):
            return super().forward(x)
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_full((1,), x.numel() // c)])  # fmt: skip
        total = all_reduce(local, group=self.process_group or dist.group.WORLD)
        n = total[-1]
        mean = total[:c] / n
        var = total[c : 2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)  # fmt: skip
                self.running_mean.lerp_(mean.detach(), factor)
                self.running_var.lerp_(var.detach() * (n / (n - 1)).clamp(min=1), factor)
        scale = (var + self.eps).rsqrt()
        if self.affine:
            scale = scale * self.weight
        shift = -mean * scale + (self.bias if self.affine else 0)
        return x * scale.view(1, c, 1, 1) + shift.view(1, c, 1, 1)


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
        h, w = x.shape[2:]
        params = (self.mean_weight, self.var_weight, self.weight, self.bias)
        if torch.is_grad_enabled() and (x.requires_grad or any(p is not None and p.requires_grad for p in params)):  # fmt: skip
            return _SwitchNormFn.apply(x, functools.partial(self._coefficients, h * w), *params)
        var_in, mean_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        scale, shift = self._coefficients(h * w, mean_in, var_in, *params)
        return torch.addcmul(shift, x, scale)

    def _coefficients(self, hw, mean_in, var_in, mean_weight, var_weight, weight, bias):
        """Per-(sample, channel) ``scale``, ``shift`` with y = x * scale + shift, from IN moments.

        ``hw`` is H*W (for the unbiased running variance); updates running statistics in training.
        """
        n, c = mean_in.shape[:2]
        sq_in = var_in + mean_in * mean_in  # E[x^2] per (sample, channel)
        mean_ln = mean_in.mean(1, keepdim=True)
        var_ln = sq_in.mean(1, keepdim=True) - mean_ln * mean_ln
        if self.training:
            mean_bn = mean_in.mean(0, keepdim=True)
            var_bn = sq_in.mean(0, keepdim=True) - mean_bn * mean_bn
            with torch.no_grad():
                count = n * hw
                unbiased = var_bn.flatten() * (count / max(count - 1, 1))
                self.running_mean.lerp_(mean_bn.flatten().to(self.running_mean.dtype), self.momentum)  # fmt: skip
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean_bn = self.running_mean.view(1, c, 1, 1).to(mean_in.dtype)
            var_bn = self.running_var.view(1, c, 1, 1).to(mean_in.dtype)
        wm = F.softmax(mean_weight, 0).to(mean_in.dtype)
        wv = F.softmax(var_weight, 0).to(mean_in.dtype)
        mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * mean_bn
        var = wv[0] * var_in + wv[1] * var_ln + wv[2] * var_bn
        scale = (var + self.eps).rsqrt()
        if weight is not None:
            scale = scale * weight.view(1, c, 1, 1).to(mean_in.dtype)
        shift = -mean * scale
        if bias is not None:
            shift = shift + bias.view(1, c, 1, 1).to(mean_in.dtype)
        return scale, shift

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, momentum={self.momentum}"


class _SwitchNormFn(torch.autograd.Function):
    """y = x * scale + shift with (scale, shift) a small differentiable function of the
    per-(sample, channel) moments of x; the backward fuses the big-tensor work into two
    reductions and two elementwise passes (autograd alone needs about twice that).
    """

    @staticmethod
    def forward(ctx, x, coefficients, *params):  # type: ignore[override]
        var_in, mean_in = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
        with torch.enable_grad():
            m = mean_in.detach().requires_grad_(True)
            v = var_in.detach().requires_grad_(True)
            leaves = [p.detach().requires_grad_(p.requires_grad) if p is not None else None for p in params]  # fmt: skip
            scale, shift = coefficients(m, v, *leaves)
        ctx.save_for_backward(x)
        ctx.graph = (m, v, leaves, scale, shift)
        return torch.addcmul(shift.detach(), x, scale.detach())

    @staticmethod
    @once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        m, v, leaves, scale, shift = ctx.graph
        g_scale = torch.einsum("nchw,nchw->nc", g, x).view_as(scale)
        g_shift = g.sum((2, 3), keepdim=True)
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        grads = torch.autograd.grad([scale, shift], [m, v, *wanted], [g_scale, g_shift], allow_unused=True, retain_graph=True)  # fmt: skip
        gm = grads[0] if grads[0] is not None else torch.zeros_like(m)
        gv = grads[1] if grads[1] is not None else torch.zeros_like(v)
        hw = x.shape[2] * x.shape[3]
        c1 = gv * (2.0 / hw)  # d var_in / dx = 2 (x - mean) / HW;  d mean_in / dx = 1 / HW
        c0 = gm / hw - c1 * m.detach()
        grad_x = torch.addcmul(c0, x, c1).addcmul_(g, scale.detach())
        it = iter(grads[2:])
        param_grads = [next(it) if t is not None and t.requires_grad else None for t in leaves]
        return (grad_x, None, *param_grads)
