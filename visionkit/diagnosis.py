"""Learning curves and the bias/variance diagnosis drawn from them (pure: no torch, no Lightning).

:func:`diagnose` reads per-epoch histories of the task's metric on training data (measured by an
eval pass, not the running loss) and on validation data:

* **underfitting** (high bias): the training metric itself stays low: its best value is below
  ``low_train_metric`` (metrics where higher is better, such as accuracy, mIoU, mAP);
* **overfitting** (high variance): at the last epoch the training metric exceeds the validation
  metric by at least ``gap``, the gap has grown since validation peaked, and validation has not
  improved (by more than ``min_delta``) for ``patience`` epochs;
* **both**, or **neither**.

:func:`plot_learning_curves` draws losses, metrics and learning rates per epoch in one PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

VERDICTS = ("underfitting", "overfitting", "both", "neither", "unknown")

BIAS_ADVICE = [
    "more capacity: a bigger backbone or head, or fewer frozen layers (finetune=full)",
    "train longer (trainer.max_epochs) or with a higher learning rate (optimizer.lr)",
    "less regularisation and augmentation while the training metric itself is low",
]
VARIANCE_ADVICE = [
    "more training data",
    "more augmentation (data.train_transforms)",
    "regularisation: optimizer.weight_decay, task.label_smoothing (classification)",
    "early stopping: the best checkpoint (checkpoints/best.ckpt) is the peak epoch's weights",
    "a smaller model",
]


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


def diagnose(
    train: Sequence[float | None],
    val: Sequence[float | None],
    epochs: Sequence[int] | None = None,
    *,
    metric: str = "metric",
    mode: str = "max",
    low_train_metric: float = 0.7,
    gap: float = 0.1,
    patience: int = 2,
    min_delta: float = 0.005,
) -> dict[str, Any]:
    """Underfitting / overfitting / both / neither from per-epoch metric histories.

    ``train[i]`` and ``val[i]`` are the metric after epoch ``epochs[i]`` (None where not measured);
    ``mode="min"`` for metrics where lower is better (then the bias rule, which needs an absolute
    scale, is not applied). Returns the verdict, the numbers it rests on, reasons and what to try.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    epochs = list(range(len(val))) if epochs is None else list(epochs)
    if not len(train) == len(val) == len(epochs):
        raise ValueError("train, val and epochs must have the same length")
    thresholds = {
        "low_train_metric": low_train_metric,
        "gap": gap,
        "patience": patience,
        "min_delta": min_delta,
    }
    out: dict[str, Any] = {"metric": metric, "mode": mode, "thresholds": thresholds}
    rows = [(e, t, v) for e, t, v in zip(epochs, train, val, strict=True) if _finite(v)]
    if not rows:
        return {**out, "verdict": "unknown", "reasons": ["no validation metric was recorded"], "suggestions": []}  # fmt: skip
    sign = 1.0 if mode == "max" else -1.0
    # the epoch validation peaked: improvements by more than min_delta count (as early stopping)
    peak = 0
    for i in range(1, len(rows)):
        if sign * (rows[i][2] - rows[peak][2]) > min_delta:
            peak = i
    last = len(rows) - 1
    peak_epoch, last_epoch = rows[peak][0], rows[last][0]
    val_best, val_last = rows[peak][2], rows[last][2]
    stalled = last - peak >= patience
    out.update(
        epochs=len(rows),
        best_epoch=peak_epoch,
        last_epoch=last_epoch,
        val_best=val_best,
        val_last=val_last,
        val_stalled=stalled,
    )
    trains = [t for _, t, _ in rows if _finite(t)]
    if not trains:
        out.update(verdict="unknown", suggestions=[])
        out["reasons"] = [
            "no training metric was measured (callbacks.learning_curves.train_images=0, or the "
            "data module cannot re-read its training images)"
        ]
        return out
    train_best = max(trains) if mode == "max" else min(trains)
    out.update(train_best=train_best, train_last=trains[-1])
    reasons: list[str] = []

    high_bias = mode == "max" and train_best < low_train_metric
    if mode == "max":
        word = "below" if high_bias else "reached"
        reasons.append(
            f"best training {metric} {train_best:.3f} {word} low_train_metric={low_train_metric}"
        )
    else:
        reasons.append(f"{metric} is lower-is-better: no absolute scale for the bias rule")

    high_variance = False
    t_peak, t_last = rows[peak][1], rows[last][1]
    if _finite(t_peak) and _finite(t_last):
        gap_peak, gap_last = sign * (t_peak - val_best), sign * (t_last - val_last)
        grew = gap_last - gap_peak > min_delta
        high_variance = gap_last >= gap and grew and stalled
        out.update(gap_at_best=gap_peak, gap_last=gap_last)
        reasons.append(
            f"train-val gap {gap_last:.3f} at the last epoch ({'>=' if gap_last >= gap else '<'} "
            f"gap={gap}), {gap_peak:.3f} at the best epoch {peak_epoch} "
            f"({'grown' if grew else 'not grown'})"
        )
    if stalled:
        reasons.append(
            f"validation {metric} peaked at epoch {peak_epoch} ({val_best:.3f}) and has not "
            f"improved for {last - peak} epochs (now {val_last:.3f})"
        )
    else:
        reasons.append(
            f"validation {metric} still improved within the last {patience} epochs "
            f"(best {val_best:.3f} at epoch {peak_epoch})"
        )

    verdict = {
        (True, True): "both",
        (True, False): "underfitting",
        (False, True): "overfitting",
        (False, False): "neither",
    }[(high_bias, high_variance)]
    suggestions = (BIAS_ADVICE if high_bias else []) + (VARIANCE_ADVICE if high_variance else [])
    if verdict == "neither" and not stalled:
        suggestions = ["validation was still improving: training longer may help"]
    out.update(
        verdict=verdict,
        high_bias=high_bias,
        high_variance=high_variance,
        reasons=reasons,
        suggestions=suggestions,
    )
    return out


def format_diagnosis(diagnosis: Mapping[str, Any]) -> str:
    """A few lines for the terminal: the verdict, why, and what to try."""
    lines = [f"diagnosis ({diagnosis.get('metric')}): {diagnosis['verdict']}"]
    lines += [f"  - {r}" for r in diagnosis.get("reasons", [])]
    if diagnosis.get("suggestions"):
        lines.append("  try:")
        lines += [f"  * {s}" for s in diagnosis["suggestions"]]
    return "\n".join(lines)


def plot_learning_curves(
    history: Mapping[str, Sequence[Any]], path: str | Path, metric: str, title: str = ""
) -> Path:
    """Losses, the metric (train and val) and learning rates per epoch, as one PNG.

    ``history`` holds lists indexed like ``history["epoch"]``: ``train_loss`` (running mean of the
    training steps), ``train_eval_loss`` and ``train_metric`` (the eval pass on training images),
    ``val_loss``, ``val_metric`` and ``lr`` (a mapping of optimizer group name to rate).
    """
    from matplotlib.ticker import MaxNLocator

    from visionkit.figures import pyplot, save_figure

    plt = pyplot()

    epochs = list(history.get("epoch", []))

    def series(key: str) -> list[float]:
        return [float(v) if _finite(v) else math.nan for v in history.get(key, [None] * len(epochs))]  # fmt: skip

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for key, label, style in (
        ("train_loss", "train (running, augmented)", ":"),
        ("train_eval_loss", "train (eval pass)", "-"),
        ("val_loss", "val", "-"),
    ):
        values = series(key)
        if any(math.isfinite(v) for v in values):
            ax.plot(epochs, values, style, marker="o", label=label)
    ax.set_title("loss")
    ax = axes[1]
    for key, label in (("train_metric", "train (eval pass)"), ("val_metric", "val")):
        values = series(key)
        if any(math.isfinite(v) for v in values):
            ax.plot(epochs, values, marker="o", label=label)
    ax.set_title(metric)
    ax = axes[2]
    rates: dict[str, list[float]] = {}
    for i, lrs in enumerate(history.get("lr", [])):
        for name, value in (lrs or {}).items():
            rates.setdefault(name, [math.nan] * len(epochs))[i] = float(value)
    distinct: dict[tuple[float, ...], str] = {}
    for name, values in rates.items():  # groups that share a schedule are drawn once
        key = tuple(values)
        distinct[key] = f"{distinct[key]}, {name}" if key in distinct else name
    for values, label in distinct.items():
        ax.plot(epochs, values, marker="o", label=label if len(label) < 40 else label[:37] + "...")
    if distinct and all(v > 0 for vals in distinct for v in vals if math.isfinite(v)):
        ax.set_yscale("log")
    ax.set_title("learning rate")
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
