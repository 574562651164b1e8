"""Conv-BN fusion: fused models give the unfused outputs (a classifier, a segmentation model, rtdet),
every foldable norm is folded, and the caller's model is left as it was (it may go on training).
In-place activations: only where their input is a new tensor nothing else reads; same outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

from visionkit.layers.blocks import ConvNormAct
from visionkit.layers.fuse import fuse_conv_bn, inplace_activations
from visionkit.registries import TASKS

LABELS = {"names": ["a", "b", "c"], "ids": [1, 2, 3]}
CSP = {"name": "cspnet", "widen_factor": 0.125}
MODELS = {
    "classification": {"backbone": {**CSP, "num_stages": 2}, "head": "linear"},
    "semantic_segmentation": {
        "backbone": {"name": "simple_cnn", "channels": [8, 8]},
        "head": "unet",
    },
    "detection": {
        "backbone": {**CSP, "num_stages": 3},
        "neck": {"name": "pafpn", "out_channels": 16},
        "head": {"name": "rtdet", "min_size": 64, "max_size": 64},
        "act": "swish",
    },
}


def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Running statistics and affine far from their initial values, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d | TorchvisionFrozenBN):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.randn(c, generator=g))
                m.bias.copy_(torch.randn(c, generator=g) * 0.5)


def norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("task_name", list(MODELS))
def test_fused_outputs_equal_unfused(task_name: str) -> None:
    torch.manual_seed(0)
    task = TASKS.get(task_name)(model=MODELS[task_name], num_classes=3, label_map=LABELS)
    randomise_norms(task)
    task.eval()
    before = copy.deepcopy(task.state_dict())
    fused = inplace_activations(fuse_conv_bn(task))
    assert norms(task) > 0 and norms(fused) == 0
    images = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]  # fmt: skip
    with torch.no_grad():
        if task_name == "detection":  # raw logits and boxes (an untrained model's near-equal
            # scores make NMS's choices among ties, so its detections, unstable)
            det, det_fused = task.head.detector, fused.head.detector
            x, _, _ = det.transform(images)
            want = det.predict(task.neck(task.backbone(x)))[:2]
            got = det_fused.predict(fused.neck(fused.backbone(x)))[:2]
        else:
            want, got = task.predict_outputs(images), fused.predict_outputs(images)
        for a, b in zip(want, got, strict=True):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # the caller's model is untouched: same weights and norms, and it still trains
    assert all(torch.equal(before[k], v) for k, v in task.state_dict().items())
    assert task.state_dict().keys() == before.keys()
    task.train()
    params = [p for p in task.parameters() if p.requires_grad]
    assert params and all(not any(p is q for q in fused.parameters()) for p in params)


def test_folds_only_sequential_pairs_of_conv_then_batchnorm() -> None:
    class Custom(nn.Module):  # calls its children itself: conv and bn in the reverse order
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    model = nn.Sequential(
        ConvNormAct(3, 4, 3, norm="bn", act="relu"),
        Conv2dNormActivation(4, 4, norm_layer=TorchvisionFrozenBN),  # torchvision's, frozen norm
        ConvNormAct(4, 4, 3, norm="gn", act=None),  # GroupNorm: not a fixed affine map
        Custom(),
        nn.BatchNorm2d(4),  # follows a module, not a conv
    )
    randomise_norms(model)
    model.eval()
    fused = fuse_conv_bn(model)
    assert isinstance(fused[0].norm, nn.Identity) and isinstance(fused[1][1], nn.Identity)
    assert isinstance(fused[2].norm, nn.GroupNorm)
    assert isinstance(fused[3].bn, nn.BatchNorm2d) and isinstance(fused[4], nn.BatchNorm2d)
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-5, atol=1e-5)
    assert fuse_conv_bn(model, inplace=True) is model and isinstance(model[0].norm, nn.Identity)


def test_activations_run_in_place_only_on_a_new_tensor_nothing_else_reads() -> None:
    shared = nn.ReLU()  # also used by a module's own forward: left alone

    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(4, 4, 1), shared

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(x) + self.conv(x)  # the caller's x

    model = nn.Sequential(
        nn.ReLU(),  # 0: the caller's input
        ConvNormAct(3, 4, 3, norm="bn", act="relu"),  # 1: conv -> (folded) norm -> act
        Conv2dNormActivation(4, 4, activation_layer=nn.SiLU, inplace=False),  # 2: torchvision's
        nn.Sequential(nn.Conv2d(4, 4, 1), shared),  # 3: shared instance
        Custom(),  # 4
        nn.MaxPool2d(1),  # 5: not known to make a new tensor
        nn.LeakyReLU(),  # 6
        nn.GroupNorm(2, 4),  # 7
        nn.Dropout(0.0),  # 8: not an activation
        nn.Hardswish(),  # 9: a dropout in between
    )
    randomise_norms(model)
    model.eval()
    reference = copy.deepcopy(model)
    assert inplace_activations(fuse_conv_bn(model, inplace=True)) is model
    acts = {"relu input": model[0], "cna": model[1].act, "tv": model[2][2], "shared": shared, "after pool": model[6], "after dropout": model[9]}  # fmt: skip
    assert {k for k, m in acts.items() if m.inplace} == {"cna", "tv"}
    x = torch.randn(2, 3, 9, 9)
    x_before = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(x, x_before)  # the caller's tensor is not overwritten
