"""Semantic segmentation metrics against a direct confusion-matrix computation; Dice loss formula."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from visionkit.registries import LOSSES, TASKS
from visionkit.tasks.semantic_segmentation import iou_from_confusion

K = 4
MODEL = {"backbone": {"name": "simple_cnn", "channels": [4, 4]}, "head": "unet"}


def numpy_iou(preds: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, float, float]:
    """Per-class IoU (nan when absent from both), mIoU over present classes, pixel accuracy."""
    valid = targets != 255
    p, t = preds[valid], targets[valid]
    cm = np.zeros((k, k), np.int64)
    np.add.at(cm, (t, p), 1)
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
    return iou, float(np.nanmean(iou)), float(tp.sum() / valid.sum())


def crafted(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets with ignored pixels; class 3 never appears anywhere."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (2, 16, 16), generator=g)
    preds = torch.where(torch.rand(2, 16, 16, generator=g) < 0.7, targets, torch.randint(0, 3, (2, 16, 16), generator=g))  # fmt: skip
    targets[:, :3] = 255
    return preds, targets


def build_task() -> torch.nn.Module:
    return TASKS.get("semantic_segmentation")(
        model=MODEL, num_classes=K, label_map={"names": ["bg", "a", "b", "c"], "ids": [0, 1, 2, 3]},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
    )  # fmt: skip


def test_logged_miou_pixel_accuracy_and_per_class_iou_match_the_confusion_matrix() -> None:
    batches = [crafted(s) for s in range(3)]
    task = build_task()
    images = [torch.zeros(2, 3, 16, 16) + i for i in range(3)]

    def forward(x: torch.Tensor) -> torch.Tensor:  # the i-th batch's predictions as logits
        preds = batches[int(x[0, 0, 0, 0])][0]
        return torch.nn.functional.one_hot(preds, K).permute(0, 3, 1, 2).float() * 10

    task.forward = forward
    loader = DataLoader([(images[i], batches[i][1]) for i in range(3)], batch_size=None)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    logged = trainer.validate(task, loader, verbose=False)[0]
    preds = np.concatenate([p.numpy() for p, _ in batches])
    targets = np.concatenate([t.numpy() for _, t in batches])
    iou, miou, acc = numpy_iou(preds, targets, K)
    assert logged["val/mIoU"] == pytest.approx(miou, abs=1e-6)
    assert logged["val/pixel_acc"] == pytest.approx(acc, abs=1e-6)
    per_class = task.extra_results("val")["val/per_class_iou"]
    assert per_class["c"] is None  # never predicted nor present
    assert [per_class[n] for n in ("bg", "a", "b")] == pytest.approx(list(iou[:3]), abs=1e-9)


def test_iou_from_confusion_matches_numpy() -> None:
    preds, targets = crafted(7)
    valid = targets != 255
    cm = torch.zeros(K, K, dtype=torch.long)
    cm.index_put_((targets[valid], preds[valid]), torch.ones(int(valid.sum()), dtype=torch.long), accumulate=True)  # fmt: skip
    expected, _, _ = numpy_iou(preds.numpy(), targets.numpy(), K)
    np.testing.assert_allclose(iou_from_confusion(cm).numpy(), expected, equal_nan=True)


def test_dice_loss_follows_its_formula_and_ignores_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5)
    targets = torch.randint(0, 3, (2, 5, 5))
    targets[0, 0] = 255
    loss = LOSSES.build("dice", smooth=1.0)(logits, targets)
    valid = (targets != 255).numpy()
    probs = logits.softmax(1).numpy()
    dice = []
    for c in range(3):
        p = probs[:, c][valid]
        g = (targets.numpy()[valid] == c).astype(float)
        dice.append((2 * (p * g).sum() + 1) / (p.sum() + g.sum() + 1))
    assert loss.item() == pytest.approx(1 - np.mean(dice), abs=1e-6)
    perfect = torch.nn.functional.one_hot(targets.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 100
    assert LOSSES.build("dice")(perfect, targets).item() < 1e-3
    combo = LOSSES.build("ce_dice")(logits, targets)
    ce = torch.nn.functional.cross_entropy(logits, targets, ignore_index=255)
    assert combo.item() == pytest.approx(ce.item() + loss.item(), abs=1e-5)


def test_task_logits_are_resized_to_the_image() -> None:
    task = build_task()
    assert task(torch.randn(1, 3, 30, 22)).shape == (1, K, 30, 22)
