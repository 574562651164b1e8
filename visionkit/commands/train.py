"""``python -m visionkit [train]``: fit the configured task, test the best checkpoint, write results.

results.json: ``test/*`` of the best checkpoint and ``val/*`` of the same epoch (its validation
when it was saved, :class:`~visionkit.callbacks.best_metrics.BestMetrics`), ``best_epoch``,
``best_checkpoint``, ``best_score``; the last epoch's validation under ``last/val/*`` and its
``train/*``. Without a monitored checkpoint the tested weights are the last ones, and ``val/*``
equals ``last/val/*``. Callbacks add their ``extra_results`` (the learning curves: ``diagnosis``,
printed at the end, and ``learning_curves``), the task's error analysis its ``test/*`` tables.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from visionkit import checkpoints, runner


def run(cfg: DictConfig) -> float:
    """Train; returns the objective (one float, for Hydra's sweepers) after writing results.json."""
    out = runner.setup(cfg)  # first: its path checks run before Lightning is imported
    from visionkit.callbacks.best_metrics import BestMetrics, last_val_results
    from visionkit.sweep.job import in_multirun
    from visionkit.sweep.objective import objective_key, objective_value
    from visionkit.sweep.pruning import ObjectiveMonitor, current_trial

    resumed = {}
    if cfg.get("ckpt_path"):  # resume: data only, of this task (before any data is read)
        resumed = checkpoints.check_resume(cfg.ckpt_path, cfg.task.name)
    dm = runner.build_datamodule(cfg)
    task = runner.build_task(cfg, dm)
    checkpoints.check_resume_fits(cfg.get("ckpt_path"), resumed, task)
    key = objective_key(cfg)
    monitor = ObjectiveMonitor(key, trial=current_trial())
    callbacks = [*runner.build_callbacks(cfg), BestMetrics(), monitor]
    trainer = runner.build_trainer(cfg, callbacks=callbacks)
    if trainer.is_global_zero:
        runner.save_config(cfg, out)
    trainer.fit(task, datamodule=dm, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    last = last_val_results(trainer, task)
    logged = runner.scalar_metrics(trainer.callback_metrics)
    results: dict[str, Any] = {k: v for k, v in logged.items() if not k.startswith("val/")}
    results.update(last)  # replaced below by the best epoch's, when a callback kept them
    results.update({f"last/{k}": v for k, v in last.items()})
    results.update(runner.contributions("val", *trainer.callbacks))  # BestMetrics: the best val/*
    ckpt = runner.checkpoint_callback(trainer)
    best = ckpt.best_model_path if ckpt is not None and ckpt.best_model_path else None
    figures = task.save_figures("val", str(out)) if trainer.is_global_zero else []
    if cfg.get("test_after_fit", True) and runner.has_split(dm, "test"):
        from visionkit.tta import enable_tta, tta_results

        if (
            enable_tta(task, cfg.get("tta")) is not None
        ):  # the final test with test-time augmentation
            results["tta"] = tta_results(task.tta)
        # the best checkpoint; without one (no checkpointing, `finetune=evaluate`) the weights as they are
        tested = trainer.test(task, datamodule=dm, ckpt_path=best, verbose=False, weights_only=True)
        results.update(runner.scalar_metrics(tested[0] if tested else {}))
        if trainer.is_global_zero:
            figures += trainer.lightning_module.save_figures("test", str(out))
            results.update(runner.contributions("test", trainer.lightning_module))
            analysis, pictures = runner.error_analysis(trainer.lightning_module, cfg, out)
            results.update(analysis)
            figures += pictures
    if not trainer.is_global_zero:
        return objective_value(cfg, results, strict=in_multirun())
    # data skipped, what model.pretrained loaded, the finetune schedule followed
    results.update(runner.contributions("run", task, *trainer.callbacks, dm))
    results["best_checkpoint"] = best
    if ckpt is not None and ckpt.best_model_score is not None:
        results["best_score"] = {ckpt.monitor: float(ckpt.best_model_score)}
    results["figures"] = figures
    results["objective"] = key
    path = runner.write_results(out, results)
    runner.publish_run(trainer, cfg, out)
    for callback in trainer.callbacks:  # e.g. the learning-curve diagnosis
        final_report = getattr(callback, "final_report", None)
        text = final_report() if callable(final_report) else None
        if text:
            print(text)
    print(f"results: {path}")
    return objective_value(cfg, results, strict=in_multirun())
