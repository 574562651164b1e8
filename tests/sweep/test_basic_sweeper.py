"""visionkit's grid sweeper (Hydra's basic sweeper, going on past failed jobs): the README's grid
command as written (FAST overrides and small PNG class folders appended), and how a finished
sweep's failed jobs are summed up. A sweep with failed DDP jobs runs in tests/sweep/test_job.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from tests.conftest import FAST, run_cli
from tests.sweep.sweep_data import readme_argv, small, write_imagefolder
from visionkit.errors import ConfigError
from visionkit.sweep.job import sweep_errors_to_exit, sweep_outcome

TIMEOUT = 600


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> SimpleNamespace:
    cwd = tmp_path_factory.mktemp("sweep-grid")
    argv = readme_argv("python -m visionkit --multirun optimizer.lr=1e-3,3e-3 model.act=relu,hswish")  # fmt: skip
    extra = [*small(write_imagefolder(cwd / "pets")), *FAST, "hydra.sweep.dir=grid"]
    proc = run_cli(*argv, *extra, cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)
    return SimpleNamespace(root=cwd / "grid", proc=proc)


def test_readme_grid_runs_every_combination_in_its_own_directory(grid: SimpleNamespace) -> None:
    # the grid sweeper's config shadows Hydra's `basic`: no deprecation message on any command
    assert "ConfigStore schema" not in grid.proc.stderr
    combos = []
    for num in "0123":
        config = OmegaConf.load(grid.root / num / "config.yaml")
        combos.append((config.optimizer.lr, config.model.act))
        results = json.loads((grid.root / num / "results.json").read_text())
        assert results["objective"] == "val/acc" and 0 <= results["val/acc"] <= 1
        assert "status" not in results  # a completed job
    assert combos == [(1e-3, "relu"), (1e-3, "hswish"), (3e-3, "relu"), (3e-3, "hswish")]
    assert "optimizer.lr=1e-3,3e-3" in OmegaConf.load(grid.root / "multirun.yaml").hydra.overrides.task  # fmt: skip
    assert "jobs failed" not in grid.proc.stdout + grid.proc.stderr


def job_return(num: int, outcome: object) -> JobReturn:
    failed = isinstance(outcome, BaseException)
    ret = JobReturn(overrides=[f"seed={num}"], status=JobStatus.FAILED if failed else JobStatus.COMPLETED)  # fmt: skip
    ret.hydra_cfg = OmegaConf.create({"hydra": {"job": {"num": num}}})
    ret.return_value = outcome
    return ret


def test_failed_jobs_are_summed_up_and_the_sweep_is_not_an_error(tmp_path: Path, caplog) -> None:
    returns = [job_return(0, 0.5), job_return(1, ConfigError("bad norm")), job_return(2, ValueError("nan"))]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="visionkit.sweep.job"):
        sweep_outcome(returns, tmp_path)
    assert caplog.messages == [
        f"2 of 3 jobs failed (their results.json hold the error); `python -m visionkit report "
        f"{tmp_path}` tabulates the sweep:\n  job 1 (seed=1): ConfigError: bad norm\n"
        "  job 2 (seed=2): ValueError: nan"
    ]
    caplog.clear()
    sweep_outcome(returns[:1], tmp_path)
    assert not caplog.messages


def test_a_sweep_whose_jobs_all_failed_is_one_error_line(tmp_path: Path, capsys) -> None:
    returns = [job_return(0, ConfigError("bad norm")), job_return(1, ConfigError("bad act"))]
    with pytest.raises(SystemExit) as exit_info, sweep_errors_to_exit():
        sweep_outcome(returns, tmp_path)
    assert exit_info.value.code == 2
    first = "job 0 (seed=0): ConfigError: bad norm"
    err = capsys.readouterr().err
    assert err == f"error: every job of the sweep in {tmp_path} failed; first: {first}\n"
