"""Shared test fixtures: one generated-data cache per test session, the CLI in a subprocess."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# The modules that take longest (subprocess trainings), longest first, measured with
# `--durations=0`: `make test` passes --no-loadscope-reorder, so xdist hands the files out in
# collection order, and the long ones start first while the short ones fill the end (xdist's own
# order, by number of tests, started them last and left one worker running alone).
SLOWEST_FIRST = (
    "tests/commands/test_own_data_detection.py",
    "tests/commands/test_bad_input.py",
    "tests/test_export.py",
    "tests/commands/test_own_data_instances.py",
    "tests/commands/test_own_data_classification.py",
    "tests/models/test_whole_pretrained.py",
    "tests/commands/test_train_test.py",
    "tests/commands/test_own_data_semantic.py",
    "tests/sweep/test_job.py",
    "tests/test_plugins.py",
    "tests/test_configs.py",
    "tests/commands/test_resume.py",
    "tests/sweep/test_optuna_sweeper.py",
    "tests/test_checkpoints.py",
    "tests/commands/test_rtdet_readme.py",
    "tests/commands/test_predict.py",
    "tests/callbacks/test_finetuning.py",
    "tests/commands/test_training_tools.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest modules first (SLOWEST_FIRST), the others after in their own order."""
    missing = [path for path in SLOWEST_FIRST if not (ROOT / path).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py SLOWEST_FIRST names missing files: {missing}")
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def free_port() -> int:
    """A free TCP port on localhost (for a test's process group or launcher)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def readme_blocks(section: str, level: int = 2, lang: str = "bash") -> list[str]:
    """Every fenced ``lang`` block of README.md's section whose heading (``level`` hashes) starts
    with ``section``, in order: the one README reader of the tests, so that they run what the
    README shows. A section ends at the next heading of its level or above (level 1, the title:
    the whole README)."""
    text = "\n" + (ROOT / "README.md").read_text()
    parts = text.split(f"\n{'#' * level} {section}", 1)
    assert len(parts) == 2, f"README has no {'#' * level} {section!r} section"
    part = parts[1]
    for above in range(2, level + 1):
        part = part.split(f"\n{'#' * above} ", 1)[0]
    blocks = re.findall(rf"```{lang}\n(.*?)```", part, re.S)
    assert blocks, f"README's {section!r} section has no ```{lang} block"
    return blocks


def readme_commands(section: str, level: int = 2) -> list[str]:
    """The command lines of every fenced bash block of README.md's section (see readme_blocks),
    comments and line continuations removed, so tests run them as written."""
    commands = []
    for block in readme_blocks(section, level):
        for line in block.replace("\\\n", " ").splitlines():
            command = " ".join(line.split("#", 1)[0].split())
            if command:
                commands.append(command)
    return commands


def readme_task_commands() -> dict[str, str]:
    """The README's one-task training commands ("Train each task": the default experiment,
    classification, and ``task=...``), by task."""
    commands = {}
    for command in readme_commands("Train each task"):
        words = command.split()[3:]
        if not words:
            commands["classification"] = command
        elif len(words) == 1 and words[0].startswith("task="):
            commands[words[0].removeprefix("task=")] = command
    return commands


def command_args(command: str, placeholders: dict[str, str] | None = None) -> list[str]:
    """The arguments after ``python -m visionkit`` of a README command, each placeholder (a
    substring such as ``/data/mycoco``) replaced by what the test wrote."""
    for placeholder, value in (placeholders or {}).items():
        assert placeholder in command, (placeholder, command)
        command = command.replace(placeholder, value)
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "visionkit"], command
    return words[3:]


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated datasets, shared by all xdist workers of this session (generation is race-safe)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "visionkit-data"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True, scope="session")
def _data_env(data_dir: Path) -> None:
    """Point the config's data directory at the session cache for in-process runs too."""
    os.environ["VISIONKIT_DATA_DIR"] = str(data_dir)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # two workers share two cores


@pytest.fixture(autouse=True)
def _restore_torch_determinism():
    """Trainer(deterministic=True) switches torch to deterministic algorithms for the whole
    process; undo it so later tests in the same worker (e.g. max-unpool) run as usual."""
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(before)


CLI = Callable[..., subprocess.CompletedProcess]


def run_cli(
    *args: str,
    cwd: Path,
    data_dir: Path,
    timeout: float = 300,
    check: bool | None = None,
    env: dict | None = None,
) -> subprocess.CompletedProcess:
    """Run ``python -m visionkit ARGS`` as a user would, in ``cwd``; returns the process.

    ``check``: a non-zero exit fails with the command's output (for module-scoped fixtures too).
    """
    environ = {
        **os.environ,
        "VISIONKIT_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        "PYTHONWARNINGS": "ignore",
        **(env or {}),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "visionkit", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"visionkit {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture
def cli(tmp_path: Path, data_dir: Path) -> CLI:
    """Run ``python -m visionkit ARGS`` as a user would, in ``tmp_path``; returns the process."""

    def run(*args: str, timeout: float = 300, check: bool | None = None, env: dict | None = None):
        return run_cli(*args, cwd=tmp_path, data_dir=data_dir, timeout=timeout, check=check, env=env)  # fmt: skip

    return run


# the environment of a CLI run that lists its imports on stderr (python -X importtime)
IMPORT_TIMES = {"PYTHONPROFILEIMPORTTIME": "1"}


def split_imports(stderr: str) -> tuple[set[str], str]:
    """(the modules imported, the rest of stderr) of a CLI run with IMPORT_TIMES in its env."""
    times = [line for line in stderr.splitlines() if line.startswith("import time:")]
    rest = [line for line in stderr.splitlines() if not line.startswith("import time:")]
    return {line.rsplit("|", 1)[1].strip() for line in times}, "\n".join(rest)


# Small, fast training overrides for CLI tests of any task.
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
    "trainer.accelerator=cpu",
    "data.num_workers=0",
    "callbacks.progress=null",
]


@pytest.fixture
def fast() -> list[str]:
    """Overrides that make a CLI training run take seconds."""
    return list(FAST)
