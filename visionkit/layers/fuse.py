"""Conv-BN fusion for inference: fold each BatchNorm that directly follows a convolution into it;
and activations that run in place where nothing else reads their input (:func:`inplace_activations`).

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
    for module in plain_sequentials(model):
        names = list(module._modules)
        for first, second in itertools.pairwise(names):
            conv, norm = module._modules[first], module._modules[second]
            if conv is not None and norm is not None and foldable(conv, norm):
                module._modules[first] = fold(conv, norm)
                module._modules[second] = nn.Identity()
    return model


def plain_sequentials(model: nn.Module) -> list[nn.Sequential]:
    """The ``nn.Sequential`` containers of ``model`` (subclasses included) that run their children
    in order with ``nn.Sequential.forward``: where one child's output is only the next one's input."""
    return [
        m for m in model.modules()
        if isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward
    ]  # fmt: skip


# modules whose output is a new tensor: an activation right after one may overwrite it
FRESH_OUTPUT = (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, *FROZEN_NORMS)  # fmt: skip


def inplace_activations(model: nn.Module) -> nn.Module:
    """For prediction only (no training, no hooks that keep intermediate outputs): each torch
    activation with an ``inplace`` switch (ReLU, SiLU, Hardswish, ...) that follows a convolution or
    a norm in a plain ``nn.Sequential`` (a folded norm's ``nn.Identity`` in between) runs in place,
    as its input is a tensor that nothing else reads. Same outputs; a new output per block cost a
    pass over fresh memory (a 64 px classifier at batch 32: ReLU was 25 % of its time). In place:
    returns ``model``. An activation module used in more than one place is left as it is."""
    from collections import Counter

    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    for module in plain_sequentials(model):
        fresh = False  # the value flowing here is a new tensor made inside this container
        for child in module._modules.values():
            if isinstance(child, FRESH_OUTPUT):
                fresh = True
            elif type(child).__module__ == "torch.nn.modules.activation" and isinstance(getattr(child, "inplace", None), bool):  # fmt: skip
                child.inplace = child.inplace or (fresh and uses[id(child)] == 1)
            elif not isinstance(child, nn.Identity):
                fresh = False
    return model
