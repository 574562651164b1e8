"""Conv-BN fusion for inference: fold each BatchNorm that directly follows a convolution into it.

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution
with scaled weights and a shifted bias (torch's ``fuse_conv_bn_eval``): one kernel and one pass
over the feature map fewer per block. Only pairs inside plain ``nn.Sequential`` containers are
folded (``ConvNormAct``, torchvision's ``Conv2dNormActivation``, ...), where the order of the
children is the order of execution; modules that call their children themselves are left alone.

For inference only: the fused model has no BatchNorm statistics to train, and its state dict
lacks the norms' keys, so it is never trained or saved as a checkpoint.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

from visionkit.layers.norm import FrozenBatchNorm2d

FROZEN_NORMS = (FrozenBatchNorm2d, TorchvisionFrozenBN)


def foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm`` (right after ``conv``) is a fixed per-channel affine map over its outputs:
    a BatchNorm with running statistics (used in eval mode) or a frozen BatchNorm."""
    if not isinstance(conv, nn.Conv2d) or conv.weight is None:
        return False
    if isinstance(norm, nn.modules.batchnorm._BatchNorm):
        stats = norm.track_running_stats and norm.running_mean is not None and norm.running_var is not None  # fmt: skip
        return stats and norm.num_features == conv.out_channels
    return isinstance(norm, FROZEN_NORMS) and norm.running_mean.numel() == conv.out_channels


def fold(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A new convolution (same class and settings as ``conv``) equal to ``norm(conv(x))`` in eval."""
    # a copy of everything but the weights, which are replaced next (not copied for nothing)
    fused = copy.deepcopy(conv, memo={id(p): p for p in (conv.weight, conv.bias) if p is not None})
    affine = getattr(norm, "affine", True)
    fused.weight, fused.bias = fuse_conv_bn_weights(
        conv.weight.detach(), None if conv.bias is None else conv.bias.detach(),
        norm.running_mean, norm.running_var, norm.eps,
        norm.weight.detach() if affine else None, norm.bias.detach() if affine else None,
    )  # fmt: skip
    return fused


def fuse_conv_bn(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` in eval mode with every foldable conv -> BatchNorm pair of its ``nn.Sequential``
    containers folded into the conv (the norm becomes ``nn.Identity``); equal outputs in eval mode.

    Not ``inplace`` (default): a fused copy, the given model is untouched (it may go on training).
    """
    model = model if inplace else copy.deepcopy(model)
    model.eval()
    for module in list(model.modules()):
        if (
            not isinstance(module, nn.Sequential)
            or type(module).forward is not nn.Sequential.forward
        ):
            continue
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if conv is not None and norm is not None and foldable(conv, norm):
                module._modules[first] = fold(conv, norm)
                module._modules[second] = nn.Identity()
    return model
