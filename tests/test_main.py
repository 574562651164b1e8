"""``python -m visionkit`` dispatch: where a resumed training run writes (no subprocess needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import visionkit.__main__ as cli


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A visionkit run directory: config.yaml at the top, checkpoints/ below."""
    run = tmp_path / "outputs" / "run 1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 1\n")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    return run


def test_train_resumes_in_the_checkpoints_run_directory(run_dir: Path) -> None:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    for key in ("ckpt_path", "+ckpt_path", "++ckpt_path"):
        args = [f"{key}={ckpt}", "trainer.max_epochs=9"]
        assert cli.resume_in_place(args) == [*args, f'hydra.run.dir="{run_dir}"']
    # a checkpoint directly in the run directory
    (run_dir / "best.ckpt").write_bytes(b"")
    args = [f"ckpt_path='{run_dir / 'best.ckpt'}'"]
    assert cli.resume_in_place(args)[-1] == f'hydra.run.dir="{run_dir}"'


def test_relative_checkpoint_paths_resolve_from_the_working_directory(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(run_dir.parent)
    args = ["ckpt_path=run 1/checkpoints/last.ckpt"]
    assert cli.resume_in_place(args)[-1] == f'hydra.run.dir="{run_dir}"'


@pytest.mark.parametrize(
    "extra",
    [["hydra.run.dir=elsewhere"], ["++hydra.run.dir=elsewhere"], ["-m", "seed=1,2"]],
    ids=["run-dir", "run-dir-forced", "multirun"],
)
def test_an_explicit_run_directory_or_a_multirun_is_left_alone(run_dir: Path, extra) -> None:
    args = [f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", *extra]
    assert cli.resume_in_place(args) == args


def test_a_checkpoint_outside_a_run_directory_gets_a_new_run(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"")
    for args in ([f"ckpt_path={tmp_path / 'model.ckpt'}"], ["ckpt_path=null"], ["seed=3"]):
        assert cli.resume_in_place(args) == args


@pytest.mark.parametrize("command", ["train", "test", "predict"])
def test_only_train_writes_into_the_checkpoints_run(
    command: str, run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = {}
    monkeypatch.setattr(cli, "run_hydra_app", lambda fn, config, args, prog: seen.update(args=args))
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(cli.COMMAND_ENV, raising=False)  # main() sets it: restored after
    ckpt = f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"
    cli.main([command, ckpt])
    resumed = f'hydra.run.dir="{run_dir}"' in seen["args"]
    assert resumed == (command == "train")


def test_a_resume_restores_the_runs_overrides_and_the_given_ones_win(run_dir: Path) -> None:
    (run_dir / ".hydra").mkdir()
    (run_dir / ".hydra" / "overrides.yaml").write_text(
        "- task=detection\n- data=coco\n- data.root=/data/my coco\n- trainer.max_epochs=3\n"
        "- +plugins.prefer.x=pkg\n- ckpt_path=old.ckpt\n- hydra.job.name=j\n"
    )
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = [f"ckpt_path={ckpt}", "++trainer.max_epochs=5"]
    assert cli.resume_in_place(args) == [
        "task=detection",
        "data=coco",
        "data.root=/data/my coco",
        "+plugins.prefer.x=pkg",
        *args,
        f'hydra.run.dir="{run_dir}"',
    ]
    # resuming elsewhere restores them too, without moving into the run
    elsewhere = [f"ckpt_path={ckpt}", "hydra.run.dir=other"]
    assert cli.resume_in_place(elsewhere)[-2:] == elsewhere
    assert "task=detection" in cli.resume_in_place(elsewhere)


def test_a_command_ends_its_process_group_even_when_it_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lightning leaves a gloo group alive at exit, where gloo can abort a finished rank (SIGABRT):
    every command destroys it, also when the command raises."""
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig

    from tests.conftest import free_port

    # outside a Hydra job (an earlier in-process compose in this worker may have left one set)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))

    def command(cfg: object) -> None:
        url = f"tcp://127.0.0.1:{free_port()}"
        dist.init_process_group("gloo", init_method=url, rank=0, world_size=1)
        assert dist.is_initialized()
        if cfg == "fail":
            raise RuntimeError("the command failed")

    cli._user_errors_to_exit(command)("ok")
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="the command failed"):
        cli._user_errors_to_exit(command)("fail")
    assert not dist.is_initialized()


def test_an_override_hydra_cannot_parse_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """An unquoted ``~`` (Hydra's grammar refuses it; bash does not expand it after ``key=``) is
    one ``error:`` line naming the override, exit code 2; sweeps and quoted values still parse."""
    cli.check_overrides(["trainer.devices=1,2", "data.split_list='a/{split}.txt'", "--multirun"])
    cli.check_overrides(["callbacks=[ema,early_stopping]", "~callbacks", "+x=1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.run_hydra_app(print, "train", ["model.pretrained=~/.cache/weights.pth"], "visionkit")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: override 'model.pretrained=~/.cache/weights.pth' does not parse")
    assert err.count("\n") == 1 and "$HOME" in err


@pytest.mark.parametrize("outcome", ["returns", "user error", "crash"])
def test_the_process_entry_freezes_the_collector_once_the_command_has_ended(
    outcome: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m visionkit`` (main without argv) calls gc.freeze() after its command, whether
    it returns, fails with exit code 2 or raises, so that the exit skips the collector's full passes
    (~1 s CPU a process); main(argv), as called in-process, leaves the collector alone."""
    import gc

    from hydra.core.hydra_config import HydraConfig

    from visionkit.errors import ConfigError

    events = []

    def command(args: list[str]) -> str:
        events.append(("command", args))
        if outcome == "user error":
            raise ConfigError("bad key 'x'")
        if outcome == "crash":
            raise RuntimeError("a bug")
        return "done"

    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: False))
    monkeypatch.setattr(cli, "_load", lambda target: command)
    monkeypatch.setattr(gc, "freeze", lambda: events.append("freeze"))  # not this pytest process
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv(cli.COMMAND_ENV, raising=False)  # main() sets it: restored after
    monkeypatch.setattr(sys, "argv", ["visionkit", "list", "norms"])
    if outcome == "returns":
        assert cli.main() == "done"
    elif outcome == "user error":
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 2
        assert capsys.readouterr().err == "error: bad key 'x'\n"
    else:
        with pytest.raises(RuntimeError, match="a bug"):
            cli.main()
    assert events == [("command", ["norms"]), "freeze"]
    events.clear()
    if outcome == "returns":
        assert cli.main(["list", "norms"]) == "done"
        assert events == [("command", ["norms"])]
