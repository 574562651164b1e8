"""Early stopping on the task's monitored metric, with the reason it stopped in results.json.

Lightning's :class:`~pytorch_lightning.callbacks.EarlyStopping` does the work (patience, min delta,
its state in checkpoints so a resumed run keeps counting); this adds ``extra_results`` so the run's
``results.json`` says whether and why training stopped early (``early_stopping`` key).
Configured by ``callbacks=early_stopping`` (conf/callbacks/early_stopping.yaml).
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import EarlyStopping as _LightningEarlyStopping
from pytorch_lightning.callbacks.early_stopping import EarlyStoppingReason


class EarlyStopping(_LightningEarlyStopping):
    """Lightning's EarlyStopping; ``extra_results("val")`` reports whether, when and why it stopped."""

    def extra_results(self, stage: str) -> dict[str, Any]:
        """``{"early_stopping": {...}}``: the reason (``patience_exhausted``, ...), the epoch
        stopped at (null when the run went to its end), the best value and the settings."""
        if stage != "val":
            return {}
        stopped = self.stopping_reason != EarlyStoppingReason.NOT_STOPPED
        best = self.best_score
        best = float(best.item() if hasattr(best, "item") else best)
        return {
            "early_stopping": {
                "stopped": stopped,
                "reason": self.stopping_reason.name.lower(),
                "message": self.stopping_reason_message,
                # Lightning's stopped_epoch is the epoch whose validation stopped the run
                "stopped_epoch": int(self.stopped_epoch) if stopped else None,
                "monitor": self.monitor,
                "mode": self.mode,
                "best": best if abs(best) != float("inf") else None,
                "patience": self.patience,
                "min_delta": abs(float(self.min_delta)),
            }
        }
