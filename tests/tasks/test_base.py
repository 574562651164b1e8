"""BaseTask.metric_pass: the validation metric on other data, without touching validation's state."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

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
