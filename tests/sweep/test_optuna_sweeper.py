"""visionkit's Optuna sweeper as a user runs it: the README's commands (trials in parallel with
joblib and the default data-loader workers; a resumed study), each job's trial in the SQLite study
under the sweep directory, a failed trial told as failed while the sweep goes on, and the report.
The ask/tell pieces are tested directly: search space parsing, how jobs are told, resume counts.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from tests.conftest import run_cli
from tests.sweep.sweep_data import FAST_DEFAULT_WORKERS, readme_argv, small, write_imagefolder
from visionkit.errors import ConfigError

optuna = pytest.importorskip("optuna")
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

from visionkit.sweep import optuna_sweeper as sw  # noqa: E402

TIMEOUT = 600


def load(sweep: Path) -> optuna.Study:
    return optuna.load_study(study_name="visionkit", storage=f"sqlite:///{sweep / 'optuna.db'}")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> SimpleNamespace:
    """The README's plain command (1 trial, in multirun/classification/<date_time>), its joblib
    command resuming that study up to 3 trials (2 in parallel), then a trial left running (an
    interruption), then the README's resume command up to 4 trials with an objective that no job
    logs (a failed trial), then the report."""
    cwd = tmp_path_factory.mktemp("sweep-optuna")
    extra = [*small(write_imagefolder(cwd / "pets")), *FAST_DEFAULT_WORKERS]
    plain = readme_argv("python -m visionkit --multirun hparams_search=classification")
    assert plain == ["--multirun", "hparams_search=classification"]
    run_cli(*plain, *extra, "hydra.sweeper.n_trials=1", cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)  # fmt: skip
    [root] = (cwd / "multirun" / "classification").iterdir()  # the default sweep directory
    parallel = readme_argv("python -m visionkit --multirun hparams_search=classification hydra/launcher=joblib")  # fmt: skip
    run_cli(*parallel, *extra, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={root}",
            cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)  # fmt: skip
    before = {n: (root / n / "results.json").read_text() for n in "012"}
    load(root).ask()  # trial 3: left running, as by a killed sweep
    resume = readme_argv("python -m visionkit --multirun hparams_search=classification hydra.sweep.dir=", date_time=root.name)  # fmt: skip
    resumed = run_cli(*resume, *extra, "hydra.sweeper.n_trials=4", "objective=val/nothing",
                      cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)  # fmt: skip
    report = run_cli(*readme_argv("python -m visionkit report", date_time=root.name),
                     cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)  # fmt: skip
    return SimpleNamespace(root=root, before=before, resumed=resumed, report=report)


def test_trials_run_in_parallel_jobs_with_data_loader_workers(sweep: SimpleNamespace) -> None:
    study = load(sweep.root)
    for trial in study.trials[:3]:  # 0: the plain command; 1, 2: in parallel (joblib)
        assert trial.state == optuna.trial.TrialState.COMPLETE
        job = sweep.root / str(trial.number)
        results = json.loads((job / "results.json").read_text())
        assert trial.value == results["val/acc"] and results["objective"] == "val/acc"
        assert trial.intermediate_values == {0: results["val/acc"]}  # reported for pruning
        config = OmegaConf.load(job / "config.yaml")
        assert config.data.num_workers == 2  # the default: workers inside joblib's workers
        assert config.optimizer.lr == pytest.approx(trial.params["optimizer.lr"])
        assert config.model.norm == trial.params["model.norm"]
        assert set(trial.params) == {"optimizer.lr", "optimizer.weight_decay", "model.norm", "model.act"}  # fmt: skip
        assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # fmt: skip
    assert (sweep.root / "multirun.yaml").exists()


def test_resume_keeps_finished_trials_and_counts_the_interrupted_one_out(sweep: SimpleNamespace) -> None:  # fmt: skip
    study = load(sweep.root)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * 3 + ["FAIL", "FAIL"]  # 3: interrupted, 4: the new trial
    assert study.user_attrs["interrupted"] == [3]
    assert not (sweep.root / "3").exists()
    for num, text in sweep.before.items():
        assert (sweep.root / num / "results.json").read_text() == text
    assert "resuming study 'visionkit': 3 trials done, 1 interrupted" in sweep.resumed.stdout + sweep.resumed.stderr  # fmt: skip


def test_a_failed_trial_is_told_with_its_error_and_the_sweep_goes_on(sweep: SimpleNamespace) -> None:  # fmt: skip
    failed = load(sweep.root).trials[4]
    assert "objective 'val/nothing' is not a logged metric; logged:" in failed.user_attrs["error"]
    results = json.loads((sweep.root / "4" / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["error"].startswith(
        "ConfigError: objective 'val/nothing' is not a logged metric"
    )
    summary = OmegaConf.load(sweep.root / "optimization_results.yaml")
    assert summary.trials.complete == 3 and summary.trials.fail == 2
    assert summary.best_value == max(t.value for t in load(sweep.root).trials[:3])


def test_report_tabulates_the_study(sweep: SimpleNamespace) -> None:
    study = load(sweep.root)
    rows = list(csv.DictReader((sweep.root / "report.csv").open()))
    assert [r["job"] for r in rows] == ["0", "1", "2", "4"]
    assert [r["status"] for r in rows] == ["completed", "completed", "completed", "failed"]
    best = [r for r in rows if r["best"] == "*"]
    assert len(best) == 1 and int(best[0]["job"]) == study.best_trial.number
    assert float(best[0]["objective (val/acc)"]) == pytest.approx(study.best_value, rel=1e-5)
    assert {"optimizer.lr", "model.norm", "model.act", "optimizer.weight_decay"} <= set(rows[0])
    assert rows[0]["model.norm"] == study.trials[0].params["model.norm"]
    markdown = (sweep.root / "report.md").read_text()
    assert "- job 4 (failed): ConfigError: objective 'val/nothing'" in markdown
    assert markdown in sweep.report.stdout
    assert (sweep.root / "report.png").read_bytes()[:4] == b"\x89PNG"


# -- the ask/tell pieces -------------------------------------------------------------------------
def parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def test_search_space_from_hydra_sweep_syntax() -> None:
    d = optuna.distributions
    params = {"optimizer.lr": "tag(log, interval(1e-4, 1e-1))", "model.norm": "choice(bn, gn)"}
    space, fixed = sw.search_space(params, ["trainer.max_epochs=1", "data.batch_size=range(2, 8, 2)", "seed=tag(int, interval(1, 5))"], parser())  # fmt: skip
    assert space == {
        "optimizer.lr": d.FloatDistribution(1e-4, 1e-1, log=True),
        "model.norm": d.CategoricalDistribution(["bn", "gn"]),
        "data.batch_size": d.CategoricalDistribution([2, 4, 6]),
        "seed": d.IntDistribution(1, 5),
    }
    assert fixed == ["trainer.max_epochs=1"]


class Return:
    """A Hydra JobReturn: ``return_value`` re-raises the job's exception."""

    def __init__(self, value: object) -> None:
        self.value = value

    @property
    def return_value(self) -> object:
        if isinstance(self.value, BaseException):
            raise self.value
        return self.value


def test_jobs_are_told_complete_failed_or_pruned() -> None:
    study = optuna.create_study(direction="maximize")
    outcomes = [0.5, ConfigError("bad norm"), optuna.TrialPruned("pruned at epoch 1"), float("nan")]
    states = [sw.tell(study, study.ask(), Return(v)) for v in outcomes]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "FAIL"]
    assert study.trials[1].user_attrs["error"] == "ConfigError: bad norm"
    assert sw.finished(study) == 4


def test_resumed_sampler_moves_its_seed_on() -> None:
    node = OmegaConf.create({"_target_": "optuna.samplers.RandomSampler", "seed": 7})
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def first_x(sampler: object) -> float:
        return optuna.create_study(sampler=sampler).ask(space).params["x"]

    assert first_x(sw.build_sampler(node, 0)) == first_x(optuna.samplers.RandomSampler(seed=7))
    assert first_x(sw.build_sampler(node, 3)) == first_x(optuna.samplers.RandomSampler(seed=10))
    assert sw.build_sampler(None, 3) is None
