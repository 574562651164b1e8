"""``python -m visionkit test ckpt_path=...``: evaluate a checkpoint on the test split."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from visionkit import runner
from visionkit.errors import ConfigError


def run(cfg: DictConfig) -> dict[str, Any]:
    """Test the checkpoint's task on ``cfg.data``'s test split; writes results.json."""
    if not cfg.get("ckpt_path"):
        raise ConfigError("test needs a checkpoint: add ckpt_path=<path to .ckpt>")
    out = runner.setup(cfg)  # its path checks run before torch is imported
    from visionkit.tta import enable_tta, tta_results

    task = runner.load_task_from_checkpoint(cfg.ckpt_path)
    tta = enable_tta(task, cfg.get("tta"))  # null: the task's forward as it is
    dm = runner.build_datamodule(cfg, task_name=task.task_name)
    runner.check_same_classes(task, dm, cfg.ckpt_path)
    trainer = runner.build_trainer(cfg, callbacks=[])
    tested = trainer.test(task, datamodule=dm, verbose=False)
    if not trainer.is_global_zero:
        return {}
    results = runner.scalar_metrics(tested[0] if tested else {})
    results.update(runner.contributions("test", task))
    results.update(runner.contributions("run", task, dm))
    results["checkpoint"] = str(cfg.ckpt_path)
    if tta is not None:
        results["tta"] = tta_results(tta)
    results["figures"] = task.save_figures("test", str(out))
    analysis, pictures = runner.error_analysis(task, cfg, out)
    results.update(analysis)
    results["figures"] += pictures
    path = runner.write_results(out, results)
    runner.publish_run(trainer, cfg, out)
    print(f"results: {path}")
    return results
