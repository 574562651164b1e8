"""What one Hydra job of visionkit needs to know about the sweep around it.

- Lightning's DDP launcher starts ranks 1..N-1 as ``python -m visionkit <the parent's argv>``. In a
  multirun that argv is the whole sweep (``--multirun trainer.devices=1,2``), so each child would
  run every job again. :func:`export` records the job's own overrides and directory in the
  environment the children inherit, and :func:`ddp_child_argv` turns a child's argv back into
  exactly that one job, whatever the strategy key says.
- In a joblib worker, :func:`use_stdlib_processes` lets data-loader workers start.
- :func:`isolated`: a DDP job leaves no process group nor DDP variables to the next job.
- A job of a sweep that fails is recorded in its ``results.json`` (``status``, ``error``) and
  raised to Hydra, which marks it failed: the sweep goes on and the report lists it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
        from visionkit.lightning_compat import end_ddp_children

        end_ddp_children()  # first: Lightning's observer would kill this process for a failed rank
        dist = sys.modules.get("torch.distributed")  # never imports torch itself
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def status_of(exc: BaseException) -> str:
    """'pruned' for Optuna's TrialPruned (by name: Optuna may not be installed), else 'failed'."""
    return "pruned" if type(exc).__name__ == "TrialPruned" else "failed"


def record_failure(exc: BaseException) -> Path | None:
    """Write the job's ``status`` and ``error`` into its ``results.json`` (rank zero); the
    traceback goes to the job's log (``<job dir>/<job name>.log``)."""
    from hydra.core.hydra_config import HydraConfig

    from visionkit.runner import write_results

    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return None
    out = Path(HydraConfig.get().runtime.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    error = f"{type(exc).__name__}: {exc}".strip()
    logging.getLogger(__name__).error("job %s", status_of(exc), exc_info=exc)
    return write_results(out, {"status": status_of(exc), "error": error})
