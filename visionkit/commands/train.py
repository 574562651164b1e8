"""``python -m visionkit [train]``: fit the configured task, test the best checkpoint, write results."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from visionkit import runner


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train; returns what was written to results.json (rank zero)."""
    out = runner.setup(cfg)
    dm = runner.build_datamodule(cfg)
    task = runner.build_task(cfg, dm)
    trainer = runner.build_trainer(cfg)
    if trainer.is_global_zero:
        runner.save_config(cfg, out)
    trainer.fit(task, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
    results: dict[str, Any] = runner.scalar_metrics(trainer.callback_metrics)
    ckpt = runner.checkpoint_callback(trainer)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    figures = task.save_figures("val", str(out)) if trainer.is_global_zero else []
    if cfg.get("test_after_fit", True) and runner.has_split(dm, "test"):
        # the best checkpoint; without one (no checkpointing, `finetune=evaluate`) the weights as they are
        tested = trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False)
        results.update(runner.scalar_metrics(tested[0] if tested else {}))
        if trainer.is_global_zero:
            figures += trainer.lightning_module.save_figures("test", str(out))
            results.update(trainer.lightning_module.extra_results("test"))
    if not trainer.is_global_zero:
        return results
    results.update(task.extra_results("val"))
    results.update(runner.data_results(dm))
    report = getattr(trainer.lightning_module, "finetune_report", None)
    if report:  # the schedule followed (for `auto`: its choice and reason)
        results["finetune"] = report
    results["best_checkpoint"] = best
    if ckpt is not None and ckpt.best_model_score is not None:
        results["best_score"] = {ckpt.monitor: float(ckpt.best_model_score)}
    results["figures"] = figures
    path = runner.write_results(out, results)
    print(f"results: {path}")
    return results
