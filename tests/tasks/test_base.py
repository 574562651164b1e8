"""BaseTask: the validation metric on other data without touching validation's state (metric_pass), and
the optimizer it builds (the shipped ones fused; a fused step with AMP clipping refused)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from visionkit.tasks.classification import ClassificationTask
from visionkit.tasks.semantic_segmentation import SemanticSegmentationTask

MODEL = {"backbone": {"name": "simple_cnn"}, "head": {"name": "linear"}, "norm": "bn", "act": "relu"}  # fmt: skip


def batches(seed: int, n: int, size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, size, size, generator=g), torch.randint(0, 3, (n,), generator=g)) for _ in range(3)]  # fmt: skip


def test_classification_metric_pass_matches_numpy_and_leaves_validation_alone() -> None:
    torch.manual_seed(0)
    task = ClassificationTask(model=MODEL, num_classes=3).train()
    val_images, val_targets = batches(1, 5)[0]
    task.val_metrics.update(task.eval()(val_images), val_targets)  # validation in progress
    before = {k: float(v) for k, v in task.val_metrics.compute().items()}
    task.train()
    data = batches(2, 4) + batches(3, 3)  # unequal batch sizes: per-image means
    values = task.metric_pass(data)
    assert task.training  # the mode is restored
    task.eval()
    with torch.no_grad():
        logits = torch.cat([task(x) for x, _ in data])
    targets = torch.cat([y for _, y in data])
    acc = float(np.mean(logits.argmax(1).numpy() == targets.numpy()))
    assert abs(values["acc"] - acc) < 1e-6
    assert abs(values["loss"] - float(F.cross_entropy(logits, targets))) < 1e-5
    assert set(values) == {"acc", "f1", "loss"}
    after = {k: float(v) for k, v in task.val_metrics.compute().items()}
    assert after == before  # validation's own metric state is untouched


def test_semantic_metric_pass_is_the_validation_miou() -> None:
    torch.manual_seed(0)
    model = {**MODEL, "head": {"name": "fcn"}}
    task = SemanticSegmentationTask(model=model, num_classes=3).eval()
    g = torch.Generator().manual_seed(4)
    data = [(torch.randn(2, 3, 32, 32, generator=g), torch.randint(0, 3, (2, 32, 32), generator=g)) for _ in range(2)]  # fmt: skip
    values = task.metric_pass(data)
    for batch in data:  # what validation computes on the same batches
        task.measure(batch, task.val_metrics)
    expected = {k.split("/")[-1]: float(v) for k, v in task.val_metrics.compute().items()}
    assert {k: values[k] for k in expected} == expected
    assert set(values) == {"mIoU", "pixel_acc", "loss"}


@pytest.mark.parametrize("name", ["adamw", "sgd"])
def test_shipped_optimizers_take_fused_steps_with_the_loops_updates(name: str) -> None:
    """conf/optimizer/*.yaml build fused optimizers (one kernel per step: 3-4x faster AdamW steps on
    CPU); their updates equal torch's per-tensor loop within float rounding."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from tests.test_configs import compose_cfg

    spec = compose_cfg([f"optimizer={name}"]).optimizer
    assert spec.fused is True
    torch.manual_seed(0)
    start = [torch.randn(16, 8, 3, 3), torch.randn(16)]
    grads = [[torch.randn_like(p) for p in start] for _ in range(3)]
    final = []
    for fused in (True, False):
        params = [nn.Parameter(p.clone()) for p in start]
        optimizer = instantiate(OmegaConf.merge(spec, {"fused": fused}))(params)
        assert optimizer.defaults["fused"] is fused
        for step in grads:
            for p, g in zip(params, step, strict=True):
                p.grad = g.clone()
            optimizer.step()
        final.append(params)
    for a, b in zip(*final, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fused, clip, scaler, refused", [
    (True, 1.0, True, True), (True, None, True, False), (True, 1.0, False, False), (False, 1.0, True, False),
])  # fmt: skip
def test_a_fused_step_with_amp_gradient_clipping_is_one_config_error(fused: bool, clip: float | None, scaler: bool, refused: bool) -> None:  # fmt: skip
    """Lightning cannot clip gradients that a fused step unscales itself (16-mixed's scaler): the
    task says so when it builds the optimizer, naming the keys."""
    from tests.callbacks.finetune_toy import make_task
    from visionkit.errors import ConfigError

    task = make_task()
    task.hparams.optimizer = {**task.hparams.optimizer, "fused": fused}
    task._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=object() if scaler else None), gradient_clip_val=clip)  # fmt: skip
    if refused:
        with pytest.raises(ConfigError, match=r"^optimizer\.fused=true cannot be combined with trainer\.precision=16-mixed and trainer\.gradient_clip_val=1\.0"):  # fmt: skip
            task.configure_optimizers()
    else:
        assert task.configure_optimizers().defaults["fused"] is fused


def test_channels_last_model_trains_like_the_contiguous_one() -> None:
    """model.channels_last=true keeps every 4-D weight (and so its gradient) in NHWC memory; the
    outputs and gradients equal the default layout's, and the weights load either way."""
    from tests.callbacks.finetune_toy import make_task
    from tests.test_configs import compose_cfg
    from visionkit.errors import ConfigError

    torch.manual_seed(0)
    plain_task = make_task()
    nhwc = make_task(channels_last=True)
    nhwc.load_state_dict(plain_task.state_dict())
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for task in (plain_task, nhwc):
        task.train()
        out = task(x)
        out.square().mean().backward()
        outs.append(out)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(plain_task.named_parameters(), nhwc.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5, msg=name)
        if b.ndim == 4:
            assert b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous()
            assert b.grad.is_contiguous(memory_format=torch.channels_last)
    assert any(p.ndim == 4 for p in nhwc.parameters())
    with pytest.raises(ConfigError, match=r"^model\.channels_last must be true or false, got 'yes'"):  # fmt: skip
        make_task(channels_last="yes")
    assert compose_cfg(["experiment=rtdet_n"]).model.channels_last is True
    assert compose_cfg([]).model.channels_last is False
