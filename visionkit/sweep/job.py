"""What one Hydra job of visionkit needs to know about the sweep around it.

- Lightning's DDP launcher starts ranks 1..N-1 as ``python -m visionkit <the parent's argv>``. In a
  multirun that argv is the whole sweep (``--multirun trainer.devices=1,2``), so each child would
  run every job again. :func:`export` records the job's own overrides and directory in the
  environment the children inherit, and :func:`ddp_child_argv` turns a child's argv back into
  exactly that one job, whatever the strategy key says.
- In a joblib worker, :func:`use_stdlib_processes` lets data-loader workers start, and
  :func:`as_visionkit_main` lets Lightning's DDP launcher start its ranks as visionkit.
- :func:`isolated`: a DDP job leaves no process group nor DDP variables to the next job.
- A job of a sweep that fails is recorded in its ``results.json`` (``status``, ``error``) and
  raised to Hydra, which marks it failed: the sweep goes on and the report lists it;
  :func:`sweep_outcome` sums the failures up at the end of a grid sweep.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

JOB_ENV = "VISIONKIT_JOB"
# what Lightning's DDP launcher sets in the launching process's environment
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_multirun() -> bool:
    """Whether the current Hydra job is one job of a ``--multirun`` sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def export() -> None:
    """Put this job's overrides and output directory where Lightning's DDP children read them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    job = {"overrides": list(hydra_cfg.overrides.task), "output_dir": hydra_cfg.runtime.output_dir}
    os.environ[JOB_ENV] = json.dumps(job)


def ddp_child_argv(argv: list[str]) -> list[str]:
    """A DDP child's Hydra arguments: its parent job's overrides in that job's directory.

    Lightning appends ``hydra.run.dir``, ``hydra.job.name`` and ``hydra.output_subdir=null`` to
    the parent's full argv; only the job name is kept from it. Outside a DDP child (no job
    recorded, as under ``torchrun`` or SLURM, which start every rank themselves) ``argv`` is
    returned as it is.
    """
    raw = os.environ.get(JOB_ENV)
    if raw is None or os.environ.get("LOCAL_RANK", "0") == "0":
        return argv
    job = json.loads(raw)
    names = [a for a in argv if a.startswith("hydra.job.name=")]
    return [
        *job["overrides"],
        f"hydra.run.dir={json.dumps(job['output_dir'])}",
        "hydra.output_subdir=null",
        *names[-1:],
    ]


def use_stdlib_processes() -> None:
    """Give a job in a joblib (loky) worker the platform's own process start method back.

    loky makes 'loky' multiprocessing's default start method in its workers; loky's Popen cannot
    start the plain ``multiprocessing.Process`` that torch's DataLoader creates for
    ``num_workers > 0`` (``'Process' object has no attribute 'env'``), and Lightning then masks
    that error with "Please call `iter(combined_loader)` first".
    """
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(multiprocessing.get_all_start_methods()[0], force=True)


@contextmanager
def as_visionkit_main() -> Iterator[None]:
    """In a launcher's worker process, let Lightning's DDP launcher start ``python -m visionkit``.

    Lightning starts ranks 1..N-1 as ``python -m <__main__'s module> <sys.argv[1:]>``; in a joblib
    (loky) worker that is loky's own worker module (``--pipe`` required: the rank dies and
    Lightning kills the worker), in a submitit job submitit's. For the job's duration ``__main__``
    is presented as ``visionkit.__main__`` with no arguments; the rank then runs exactly this job
    (:func:`ddp_child_argv`). ``python -m visionkit`` and the ``visionkit`` script are left as
    they are.
    """
    import importlib.util

    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is None or spec.name == "visionkit.__main__":
        yield
        return
    saved = sys.argv
    __main__.__spec__ = importlib.util.find_spec("visionkit.__main__")
    sys.argv = [saved[0]]
    try:
        yield
    finally:
        __main__.__spec__, sys.argv = spec, saved


@contextmanager
def isolated() -> Iterator[None]:
    """Leave nothing of one job's DDP to the next job of the sweep in the same process.

    Lightning keeps its process group until the process exits and leaves ``LOCAL_RANK``,
    ``WORLD_SIZE``... in the environment, so a second DDP job would join the first one's dead
    group ("Connection closed by peer") or take itself for an externally started rank; and its
    child observer would kill the sweep when a failed job's child rank exits non-zero.
    """
    saved = {key: os.environ.get(key) for key in DDP_ENV}
    try:
        yield
    finally:
        from visionkit.distributed import end_process_group
        from visionkit.lightning_compat import end_ddp_children

        end_ddp_children()  # first: Lightning's observer would kill this process for a failed rank
        end_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def status_of(exc: BaseException) -> str:
    """'pruned' for Optuna's TrialPruned (by name: Optuna may not be installed), else 'failed'."""
    return "pruned" if type(exc).__name__ == "TrialPruned" else "failed"


def record_failure(exc: BaseException) -> Path | None:
    """Write the job's ``status`` and ``error`` into its ``results.json`` (rank zero); the console
    gets one line, the job's log file (``<job dir>/<job name>.log``) the traceback too."""
    from hydra.core.hydra_config import HydraConfig

    from visionkit.runner import write_results

    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return None
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    error = f"{type(exc).__name__}: {exc}".strip()
    logger = logging.getLogger(__name__)
    logger.error("job %s: %s", status_of(exc), error)
    trace = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, "traceback of the job's error", (), (type(exc), exc, exc.__traceback__))  # fmt: skip
    for handler in logging.getLogger().handlers:  # Hydra's job logging: console and file
        if isinstance(handler, logging.FileHandler):
            handler.handle(trace)
    return write_results(out, {"status": status_of(exc), "error": error})


def failure_of(job_return: Any) -> BaseException | None:
    """The exception of a failed Hydra job (a ``JobReturn``), or None when it completed."""
    if getattr(job_return.status, "name", "") != "FAILED":
        return None
    return job_return._return_value  # the dataclass field: `return_value` would re-raise it


def sweep_outcome(returns: Sequence[Any], sweep_dir: Path) -> None:
    """Log which jobs of a finished sweep failed, with their errors; a ConfigError when all did.

    A failed job is a finished job with a recorded error (``results.json``), not the end of the
    sweep: ``python -m visionkit report <sweep dir>`` tabulates it beside the others.
    """
    from visionkit.errors import ConfigError

    log = logging.getLogger(__name__)
    failed = []
    for number, job_return in enumerate(returns):
        exc = failure_of(job_return)
        if exc is not None:
            num = job_return.hydra_cfg.hydra.job.num if job_return.hydra_cfg else number
            failed.append(f"job {num} ({' '.join(job_return.overrides or [])}): {type(exc).__name__}: {exc}")  # fmt: skip
    if not failed:
        return
    summary = f"{len(failed)} of {len(returns)} jobs failed (their results.json hold the error)"
    if len(failed) == len(returns):
        raise ConfigError(f"every job of the sweep in {sweep_dir} failed; first: {failed[0]}")
    log.warning("%s; `python -m visionkit report %s` tabulates the sweep:\n  %s", summary, sweep_dir, "\n  ".join(failed))  # fmt: skip


@contextmanager
def sweep_errors_to_exit() -> Iterator[None]:
    """A user error raised by a sweeper itself (not by a job) ends the sweep with one
    ``error: ...`` line and exit code 2, as the commands do, instead of Hydra's traceback."""
    from visionkit.errors import VisionkitError, user_message

    try:
        yield
    except VisionkitError as exc:
        print(f"error: {user_message(exc)}", file=sys.stderr)
        raise SystemExit(2) from exc
