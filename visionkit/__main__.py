"""``python -m visionkit [COMMAND] [HYDRA OVERRIDES...]``: dispatch a command to its Hydra app.

Each command is a function ``run(cfg)`` in ``visionkit.commands.<name>``, called inside a Hydra app
composed from ``conf/<config>.yaml``; ``list`` is a plain argparse command. This module imports
neither torch nor Lightning, so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_COMMAND = "train"
COMMAND_ENV = "VISIONKIT_COMMAND"

# command -> (module:function, Hydra primary config or None for a plain argv command)
COMMANDS: dict[str, tuple[str, str | None]] = {
    "train": ("visionkit.commands.train:run", "train"),
    "test": ("visionkit.commands.test:run", "train"),
    "predict": ("visionkit.commands.predict:run", "predict"),
    "export": ("visionkit.commands.export:run", "export"),
    "analyze": ("visionkit.commands.analyze:run", "analyze"),
    "browse": ("visionkit.commands.browse:run", "browse"),
    "stats": ("visionkit.commands.stats:run", "stats"),
    "list": ("visionkit.commands.list:main", None),
    "report": ("visionkit.commands.report:main", None),
    "convert": ("visionkit.commands.convert:main", None),
}


def _load(target: str) -> Callable[..., Any]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _fail(message: str, code: int = 2) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def _user_errors_to_exit(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Turn a VisionkitError into one 'error: ...' line and exit code 2, not a traceback."""
    from visionkit.errors import VisionkitError, user_message

    def task_function(cfg: Any) -> Any:
        from visionkit.allocator import keep_freed_memory
        from visionkit.distributed import end_process_group
        from visionkit.sweep import job

        job.export()  # Lightning's DDP children of this job run exactly this job
        job.use_stdlib_processes()  # data-loader workers inside joblib's workers
        try:
            keep_freed_memory()  # batches' memory reused, not faulted in again (visionkit.allocator)
            if job.in_multirun():  # the next job starts clean; a failure is recorded, and
                with job.isolated(), job.as_visionkit_main():  # raised for Hydra to mark the
                    return fn(cfg)  # job failed: the sweep goes on
            try:
                return fn(cfg)
            finally:  # a rank that exits with its gloo group alive can abort (SIGABRT)
                end_process_group()
        except Exception as exc:
            if job.in_multirun():
                job.record_failure(exc)
                raise
            if isinstance(exc, VisionkitError):
                _fail(user_message(exc))
            if isinstance(exc, FileNotFoundError):
                _fail(f"file not found: {exc.filename or exc}")
            raise

    return task_function


def run_hydra_app(
    function: Callable[[Any], Any], config_name: str, argv: list[str], prog: str
) -> Any:
    """Run ``function`` as a Hydra app over ``argv`` (overrides and Hydra flags)."""
    import hydra

    from visionkit.plugins import conf_dir, register_config_search_path

    register_config_search_path()
    check_overrides(argv)
    sys.argv = [prog, *argv]
    app = hydra.main(config_path=str(conf_dir()), config_name=config_name, version_base="1.3")
    return app(_user_errors_to_exit(function))()


def check_overrides(argv: Sequence[str]) -> None:
    """An override Hydra's grammar refuses (e.g. an unquoted ``~``) is one ``error:`` line and
    exit code 2, like every other user mistake, not Hydra's multi-line lexer report and exit 1."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            try:
                parser.parse_overrides([arg])
            except OverrideParseException as exc:
                reason = str(exc).splitlines()[0]
                _fail(
                    f"override {arg!r} does not parse ({reason}); quote a value with special "
                    f"characters, e.g. 'key=\"value\"', or write $HOME for ~ "
                    "(https://hydra.cc/docs/advanced/override_grammar/basic/)"
                )


def main(argv: Sequence[str] | None = None) -> Any:
    """Entry point of ``python -m visionkit`` and the ``visionkit`` script (and of Lightning's DDP
    children, which re-run ``python -m visionkit``). Without ``argv`` it runs the process's own
    command line, after which the process only exits: see :func:`skip_exit_collection`."""
    if argv is None:
        try:
            return main(sys.argv[1:])
        finally:  # returned, failed with exit code 2 or raised: the process ends either way
            skip_exit_collection()
    args = list(argv)
    # Lightning's DDP launcher re-runs `python -m visionkit <overrides>` for the other ranks,
    # without the command word: they read it from the environment the launching rank set.
    command = (
        os.environ.get(COMMAND_ENV, DEFAULT_COMMAND)
        if "LOCAL_RANK" in os.environ
        else DEFAULT_COMMAND
    )
    if args and not args[0].startswith("-") and "=" not in args[0]:
        command = args.pop(0)
        if command not in COMMANDS:
            import difflib

            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            _fail(f"unknown command '{command}'.{hint} Commands: {', '.join(COMMANDS)}")
    if "LOCAL_RANK" in os.environ:  # a DDP child of a sweep's job runs that job only
        from visionkit.sweep.job import ddp_child_argv

        args = ddp_child_argv(args)
    target, config_name = COMMANDS[command]
    os.environ[COMMAND_ENV] = command
    if command == "train":
        args = resume_in_place(args)
    if config_name is None:
        return _user_errors_to_exit(_load(target))(args)
    return run_hydra_app(_load_lazily(target), config_name, args, prog=f"visionkit {command}")


def skip_exit_collection() -> None:
    """Spare the exit the garbage collector's full passes over every object left (~1 s CPU per
    process with torch, torchvision and Lightning loaded; 0.2 s left): ``gc.freeze()`` moves them
    to the permanent generation, which the interpreter's shutdown collections skip.

    Not ``os._exit``: atexit handlers (logging, Lightning, MLflow, W&B) still run, files are
    flushed and closed, and objects freed by reference counting are finalised as before. Only
    objects in reference cycles are left unfinalised; every visionkit output (loggers,
    checkpoints, predictions, Hydra's files) is written and closed before the command returns.
    """
    import gc

    gc.freeze()


def resume_in_place(args: list[str]) -> list[str]:
    """``train ckpt_path=<run>/checkpoints/last.ckpt`` continues in ``<run>`` with the run's own
    overrides applied again before the given ones (so the given ones win): a resume needs only
    the path.

    ``<run>`` is the checkpoint's folder or its parent, whichever holds the run's ``config.yaml``.
    An explicit ``hydra.run.dir=...`` resumes elsewhere (the overrides are still restored); a
    multirun, or a checkpoint outside a visionkit run directory, leaves the arguments as they are.
    """
    values = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if eq:
            values[key.lstrip("+~")] = value.strip("'\"")
    ckpt = values.get("ckpt_path")
    if not ckpt or ckpt == "null" or any(arg in ("-m", "--multirun") for arg in args):
        return args
    from pathlib import Path

    for folder in list(Path(ckpt).expanduser().absolute().parents)[:2]:
        if (folder / "config.yaml").is_file():
            restored = [*saved_overrides(folder, set(values)), *args]
            if "hydra.run.dir" in values:
                return restored
            quoted = str(folder).replace('"', '\\"')
            return [*restored, f'hydra.run.dir="{quoted}"']
    return args


def saved_overrides(run: Any, given: set[str]) -> list[str]:
    """The overrides the run in ``run`` was started with (``.hydra/overrides.yaml``), except the
    keys given again now (``given``), ``ckpt_path`` and ``hydra.*``: a resume needs only the path."""
    import yaml

    path = run / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    saved = yaml.safe_load(path.read_text()) or []
    kept = []
    for override in saved:
        key = str(override).partition("=")[0].lstrip("+~")
        if key not in given and key != "ckpt_path" and not key.startswith("hydra."):
            kept.append(str(override))
    return kept


def _load_lazily(target: str) -> Callable[[Any], Any]:
    """Import the command module only when the app runs (so --help and --cfg stay light)."""

    def function(cfg: Any) -> Any:
        return _load(target)(cfg)

    return function


if __name__ == "__main__":
    main()
