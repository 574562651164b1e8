"""A sweep's jobs run exactly once each, wherever they run: Lightning's DDP children inside a
multirun (on Hydra's basic launcher and inside joblib's workers), jobs on the submitit launcher,
and one job on two torchrun "nodes".

The README's commands run as written (FAST overrides and small PNG class folders appended; the DDP
sweep also sweeps an objective that no job logs, so that a job fails in DDP before the next DDP
job, and the sweep still ends with exit code 0 and a summary of the failed jobs). Every job must
equal the same job run alone: the DDP job of the sweep equals two torchrun node processes (one
job alone, on 2 ranks) and the same DDP job in a joblib worker; the single-device job equals a
one-job sweep on submitit's local launcher (its own process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import FAST, free_port, run_cli
from tests.sweep.sweep_data import metrics, readme_argv, small, write_imagefolder
from visionkit.sweep import job

TIMEOUT = 600


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """The DDP sweep, the DDP job in a joblib worker, a one-job submitit sweep, two torchrun nodes."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    cwd = tmp_path_factory.mktemp("sweep-job")
    extra = [*small(write_imagefolder(cwd / "pets")), *FAST]
    # jobs: (1 device, objective not logged: fails), (1, val/acc), (2, fails in DDP), (2, val/acc)
    sweep = [*readme_argv("python -m visionkit --multirun trainer.devices=1,2"), *extra]
    sweep += ["objective=val/nothing,val/acc", "hydra.sweep.dir=sweep"]
    proc = run_cli(*sweep, cwd=cwd, data_dir=data_dir, timeout=TIMEOUT)
    (cwd / "sweep.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stderr[-4000:]  # failed jobs are reported, not fatal
    joblib = ["--multirun", "hydra/launcher=joblib", "trainer.devices=2", *extra, "hydra.sweep.dir=joblib"]  # fmt: skip
    run_cli(*joblib, cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)
    local = ["--multirun", "hydra/launcher=submitit_local", *extra, "hydra.sweep.dir=local"]
    run_cli(*local, cwd=cwd, data_dir=data_dir, timeout=TIMEOUT, check=True)
    torchrun = Path(sys.executable).with_name("torchrun")
    port = str(free_port())
    nodes = []
    for rank in "01":
        argv = readme_argv(f"torchrun --nnodes=2 --nproc-per-node=1 --node-rank={rank}")
        argv = [a.replace("29500", port) for a in argv]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
               "VISIONKIT_DATA_DIR": str(data_dir)}  # fmt: skip
        command = [str(torchrun), *argv[1:], *extra]
        out = subprocess.PIPE
        nodes.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True))  # fmt: skip
    outputs = [node.communicate(timeout=TIMEOUT)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-4000:]
    return cwd


def test_ddp_job_of_a_sweep_runs_once_in_its_own_directory(runs: Path) -> None:
    sweep = runs / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    for num in "13":
        ckpts = sorted(p.name for p in (sweep / num / "checkpoints").iterdir())
        assert ckpts == ["best.ckpt", "last.ckpt"], f"job {num}: {ckpts}"
        assert results(sweep / num)["best_checkpoint"] == str(sweep / num / "checkpoints" / "best.ckpt")  # fmt: skip
    for num, devices in zip("0123", (1, 1, 2, 2), strict=True):
        assert OmegaConf.load(sweep / num / ".hydra" / "config.yaml").trainer.devices == devices
    assert (sweep / "3" / "train_ddp_process_1.log").exists()  # the child ran in job 3's directory
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    assert multirun.hydra.mode == "MULTIRUN"
    assert "trainer.devices=1,2" in multirun.hydra.overrides.task
    # nothing ran elsewhere (a DDP child given the sweep would write outputs/classification/...)
    assert not (runs / "outputs" / "classification").exists() and not (runs / "multirun").exists()


def test_failed_jobs_are_recorded_and_the_next_ddp_job_runs(runs: Path) -> None:
    """Job 2 fails inside DDP (its child rank exits 2); job 3, DDP again, still runs; the sweep
    ends with a summary naming the failed jobs, no traceback."""
    for num in "02":
        failed = results(runs / "sweep" / num)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("ConfigError: objective 'val/nothing' is not a logged metric; logged:")  # fmt: skip
        assert not (runs / "sweep" / num / "checkpoints").exists()
        log = (runs / "sweep" / num / "__main__.log").read_text()
        assert "job failed: ConfigError: objective 'val/nothing'" in log and "Traceback" in log
    output = (runs / "sweep.log").read_text()
    assert "2 of 4 jobs failed (their results.json hold the error)" in output
    assert "\n  job 0 (trainer.devices=1 " in output and "\n  job 2 (trainer.devices=2 " in output
    assert "Traceback" not in output and "Error executing job" not in output


def test_sweep_jobs_equal_the_same_jobs_run_alone(runs: Path) -> None:
    two_ranks = metrics(results(runs / "outputs" / "two_nodes"))  # the DDP job alone (torchrun)
    assert "val/acc" in two_ranks and "test/acc" in two_ranks
    assert metrics(results(runs / "sweep" / "3")) == pytest.approx(two_ranks, rel=1e-6)
    one_device = metrics(results(runs / "local" / "0"))
    assert metrics(results(runs / "sweep" / "1")) == pytest.approx(one_device, rel=1e-6)


def test_ddp_job_in_a_joblib_worker_runs_once_and_equals_it_alone(runs: Path) -> None:
    """Lightning starts the second rank from the joblib (loky) worker as visionkit, in the job's
    directory; it would start loky's worker module (and die) otherwise."""
    job = runs / "joblib" / "0"
    assert (job / "train_ddp_process_1.log").exists()
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    two_ranks = metrics(results(runs / "outputs" / "two_nodes"))
    assert metrics(results(job)) == pytest.approx(two_ranks, rel=1e-6)


def test_two_torchrun_nodes_equal_two_devices_on_one_node(runs: Path) -> None:
    two_nodes = runs / "outputs" / "two_nodes"
    assert sorted(p.name for p in (two_nodes / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # fmt: skip
    assert metrics(results(two_nodes)) == pytest.approx(metrics(results(runs / "sweep" / "3")), rel=1e-6)  # fmt: skip


def test_ddp_child_runs_its_parents_job_only(monkeypatch: pytest.MonkeyPatch) -> None:
    lightning_argv = ["--multirun", "trainer.devices=1,2", 'hydra.run.dir="outputs/x"',
                      "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]  # fmt: skip
    monkeypatch.delenv(job.JOB_ENV, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert job.ddp_child_argv(lightning_argv) == lightning_argv  # torchrun, SLURM: as given
    monkeypatch.setenv(job.JOB_ENV, json.dumps({"overrides": ["trainer.devices=2", "model.norm='gn'"], "output_dir": "/runs/sweep 1/1"}))  # fmt: skip
    assert job.ddp_child_argv(lightning_argv) == [
        "trainer.devices=2",
        "model.norm='gn'",
        'hydra.run.dir="/runs/sweep 1/1"',
        "hydra.output_subdir=null",
        "hydra.job.name=train_ddp_process_1",
    ]
    monkeypatch.setenv("LOCAL_RANK", "0")  # the launching rank keeps its argv
    assert job.ddp_child_argv(lightning_argv) == lightning_argv


def _start_loader_worker(fix: bool) -> str:
    """In a joblib worker: iterate a DataLoader with one worker process."""
    import torch
    from torch.utils.data import DataLoader

    if fix:
        job.use_stdlib_processes()
    try:
        batch = next(iter(DataLoader(torch.arange(4), batch_size=2, num_workers=1)))
    except AttributeError as exc:
        return f"failed: {exc}"
    return f"ok: {batch.tolist()}"


def test_data_loader_workers_start_inside_joblib_workers() -> None:
    loky = pytest.importorskip("joblib.externals.loky")
    executor = loky.get_reusable_executor(max_workers=1, reuse=False)  # a fresh worker, as joblib's
    try:
        broken = executor.submit(_start_loader_worker, False).result(timeout=TIMEOUT)
        fixed = executor.submit(_start_loader_worker, True).result(timeout=TIMEOUT)
    finally:
        executor.shutdown()
    assert broken.startswith("failed:") and "env" in broken  # the cause, so this test can fail
    assert fixed == "ok: [0, 1]"


def test_slurm_launcher_config_has_the_usual_keys() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from visionkit.plugins import conf_dir, register_config_search_path

    # the README's command, composed (it cannot be submitted here)
    argv = readme_argv("python -m visionkit --multirun hydra/launcher=slurm")
    overrides = [a for a in argv if a != "--multirun"]
    GlobalHydra.instance().clear()
    register_config_search_path()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[o.split(",")[0] for o in overrides], return_hydra_config=True)  # fmt: skip
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu"
    assert launcher.gpus_per_node == launcher.tasks_per_node == 4  # one task per device
    assert launcher.nodes == 1 and launcher.timeout_min > 0 and launcher.mem_gb > 0


@pytest.mark.parametrize(
    ("module", "swapped"),
    [
        ("joblib.externals.loky.backend.popen_loky_posix", True),
        ("submitit.core._submit", True),
        ("visionkit.__main__", False),
    ],
)
def test_a_launchers_worker_is_presented_as_visionkit_for_ddp_ranks(
    monkeypatch: pytest.MonkeyPatch, module: str, swapped: bool
) -> None:
    """Lightning starts rank 1 as ``python -m <__main__.__spec__.name> <sys.argv[1:]>``."""
    import importlib.machinery

    import __main__

    spec = importlib.machinery.ModuleSpec(module, None)
    argv = ["worker", "--process-name", "LokyProcess-1", "--pipe", "14"]
    monkeypatch.setattr(__main__, "__spec__", spec)
    monkeypatch.setattr(sys, "argv", argv)
    with job.as_visionkit_main():
        inside = (__main__.__spec__.name, list(sys.argv))
    expected = ("visionkit.__main__", ["worker"]) if swapped else (module, argv)
    assert inside == expected
    assert __main__.__spec__ is spec and sys.argv is argv  # given back after the job
