"""visionkit's Optuna sweeper: current Optuna's ask/tell API driving Hydra's launchers.

Why our own and not ``hydra-optuna-sweeper``: that plugin pins ``optuna<3`` (2.10.1, whose SQLite
storage fails with SQLAlchemy 2) and stops the whole sweep at the first failed trial. Here:

- the search space is Hydra's sweep syntax (``choice``, ``range``, ``interval``, ``tag(log, ...)``)
  from ``hydra.sweeper.params`` and the command line; plain overrides go to every trial;
- trial N is launched as Hydra job N (directory ``<sweep dir>/N``), so a job finds its trial;
- the study is stored in SQLite under the sweep directory: the same command with the same
  ``hydra.sweep.dir`` resumes it (a trial left running by the interrupted sweep is marked failed
  and not counted, finished ones are kept);
- a job that fails, or returns NaN, is told to the study as failed with its error and the sweep
  goes on; a job stopped by the pruner is told as pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionkit.errors import ConfigError

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"  # study attribute: numbers of trials an interrupted sweep left running


def distribution(override: Any) -> Any:
    """The Optuna distribution of one Hydra sweep override (``choice``, ``range``, ``interval``)."""
    import optuna.distributions as d
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    value = override.value()
    if isinstance(value, ChoiceSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):
        return d.CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return d.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return d.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ConfigError(
        f"hydra.sweeper.params: '{override.input_line}' is not choice(), range() or interval()"
    )


def search_space(
    params: dict[str, str], arguments: Sequence[str], parser: Any
) -> tuple[dict, list]:
    """(name -> distribution, fixed overrides) from the config's params and the command line."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(lines):
        if override.is_sweep_override():
            space[override.get_key_element()] = distribution(override)
        else:
            fixed.append(override.input_line)
    return space, fixed


def tell(study: Any, trial: Any, job_return: Any) -> str:
    """Tell the study how the job ended; returns the trial's state name."""
    from optuna.trial import TrialState

    try:
        value = float(job_return.return_value)
    except Exception as exc:  # noqa: BLE001 - any error of the job (Hydra re-raises it here)
        pruned = type(exc).__name__ == "TrialPruned"
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.PRUNED if pruned else TrialState.FAIL)
        log.warning("trial %d %s: %s", trial.number, "pruned" if pruned else "failed", exc)
        return "PRUNED" if pruned else "FAIL"
    return study.tell(trial, value).state.name  # NaN: Optuna marks it failed


def mark_interrupted(study: Any) -> int:
    """Trials a previous, interrupted sweep left running: failed, not counted; how many."""
    from optuna.trial import TrialState

    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        study.tell(number, state=TrialState.FAIL)
    if stale:
        study.set_user_attr(INTERRUPTED, sorted({*study.user_attrs.get(INTERRUPTED, []), *stale}))
    return len(stale)


def finished(study: Any) -> int:
    """Trials that count towards ``n_trials``: complete, pruned or failed by their own job."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    skip = set(study.user_attrs.get(INTERRUPTED, []))
    return sum(1 for t in study.get_trials(deepcopy=False, states=done) if t.number not in skip)


def build_sampler(node: Any, done: int) -> Any:
    """The configured sampler; a resumed study's seed is moved on by the trials it already has,
    so that it does not sample the first trials' parameters again."""
    from hydra.utils import instantiate

    if not node:
        return None
    node = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
    if done and node.get("seed") is not None:
        node.seed = int(node.seed) + done
    return instantiate(node)


def run_study(sweeper: Any, arguments: list[str]) -> Any:
    """The sweep: ask ``n_jobs`` trials, launch them as Hydra jobs, tell the results; repeat."""
    import optuna
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.utils import instantiate

    from visionkit.sweep.objective import objective_direction

    settings, config = sweeper.settings, sweeper.config
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    space, fixed = search_space(OmegaConf.to_container(OmegaConf.create(settings.get("params") or {})), arguments, parser)  # fmt: skip
    if not space:
        raise ConfigError(
            "the Optuna sweeper has nothing to search: give hparams_search=<name> or sweep "
            "overrides such as optimizer.lr='interval(1e-4,1e-1)'"
        )
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    direction = settings.get("direction") or objective_direction(config)
    pruner = settings.get("pruner")
    study = optuna.create_study(
        study_name=settings["study_name"],
        storage=settings.get("storage"),
        pruner=instantiate(pruner) if pruner else optuna.pruners.NopPruner(),
        direction=str(direction),
        load_if_exists=True,
    )
    study.sampler = build_sampler(settings.get("sampler"), len(study.trials)) or study.sampler
    interrupted = mark_interrupted(study)
    done = finished(study)
    if done or interrupted:
        log.info("resuming study '%s': %d trials done, %d interrupted", study.study_name, done, interrupted)  # fmt: skip
    n_trials, n_jobs = int(settings["n_trials"]), max(1, int(settings.get("n_jobs") or 1))
    while done < n_trials:
        trials = [study.ask(space) for _ in range(min(n_jobs, n_trials - done))]
        batch = [
            [*fixed, *(f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"
                       for name, value in trial.params.items())]
            for trial in trials
        ]  # fmt: skip
        sweeper.validate_batch_is_legal(batch)
        returns = sweeper.launcher.launch(batch, initial_job_idx=trials[0].number)
        for trial, job_return in zip(trials, returns, strict=True):
            tell(study, trial, job_return)
        done += len(trials)
    return summarize(study, sweep_dir)


def summarize(study: Any, sweep_dir: Path) -> Any:
    """Write ``optimization_results.yaml`` (best trial, counts per state); returns the study."""
    from optuna.trial import TrialState

    counts = {
        s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState
    }
    summary: dict[str, Any] = {"study": study.study_name, "trials": counts}
    if counts["complete"]:
        best = study.best_trial
        summary.update(best_trial=best.number, best_value=best.value, best_params=best.params)
        log.info("best trial %d: %s = %s %s", best.number, study.direction.name, best.value, best.params)  # fmt: skip
    OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
    if not counts["complete"] and not counts["pruned"]:
        raise ConfigError(f"every trial of the sweep in {sweep_dir} failed: see its report")
    return study
