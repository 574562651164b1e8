"""The one place where visionkit touches Lightning's private API (no public replacement exists).

Checked against pytorch-lightning ``CHECKED_VERSIONS``; ``tests/test_lightning_compat.py`` fails
when a name used here disappears or changes its signature (another version installed is fine
while those hold: the DDP test of tests/callbacks/test_finetuning.py checks the behaviour).

- ``rewrap_ddp``: DDP all-reduces only the parameters that required grad when it wrapped the
  model, and Lightning has no public way to wrap again after a freeze schedule changes that set
  (``DDPStrategy._setup_model`` builds the wrapper, ``_register_ddp_hooks`` re-attaches the
  strategy's communication hooks and model averaging).
- ``average_of``, ``build_average``, ``averaging_device``, ``last_update_step``,
  ``set_last_update_step``: Lightning's ``WeightAveraging`` keeps its averaged model, its
  constructor's options and the step of its last update in private attributes and offers no
  accessors; visionkit's EMA (a subclass) reads and sets them through these.
- ``end_ddp_children``: Lightning's DDP launcher starts a ``child-process-observer`` thread
  (``lightning_fabric.strategies.launchers.subprocess_script._ChildProcessObserver``, its
  ``_child_processes`` polled every 5 s) that SIGKILLs its whole process once a child rank exits
  non-zero. In a sweep that process runs the next jobs: a DDP job that fails or is pruned would
  kill the sweep. When a job ends, its observers are stopped and its child ranks waited for
  (ended if stuck, e.g. in a collective after rank zero failed).
"""

from __future__ import annotations

import subprocess
import threading
from typing import Any

from torch import nn

CHECKED_VERSIONS = ("2.6.6",)  # pytorch-lightning versions this module was checked against

# (class, private method, its parameters without self): what ``rewrap_ddp`` relies on
PRIVATE_NAMES = (
    ("pytorch_lightning.strategies.ddp:DDPStrategy", "_setup_model", ("model",)),
    ("pytorch_lightning.strategies.ddp:DDPStrategy", "_register_ddp_hooks", ()),
)


# (class, private attributes its instances keep state in): what the WeightAveraging accessors use
PRIVATE_ATTRIBUTES = (
    (
        "pytorch_lightning.callbacks:WeightAveraging",
        ("_average_model", "_device", "_use_buffers", "_kwargs", "_latest_update_step"),
    ),
)


def rewrap_ddp(strategy: Any, module: nn.Module) -> None:
    """Wrap ``module`` in a fresh DistributedDataParallel for ``strategy`` (a ``DDPStrategy``).

    The wrapper's constructor broadcasts rank 0's weights and buffers and builds a reducer for
    exactly the parameters that require grad now; every rank must call it at the same step.
    """
    strategy.model = strategy._setup_model(module)
    strategy._register_ddp_hooks()


def average_of(callback: Any) -> Any:
    """A ``WeightAveraging`` callback's ``AveragedModel`` (None before one is built)."""
    return callback._average_model


def build_average(callback: Any, module: nn.Module) -> Any:
    """A new ``AveragedModel`` of ``module`` with the callback's constructor options (device,
    use_buffers, avg_fn, ...), kept as the callback's average; returned."""
    from torch.optim.swa_utils import AveragedModel

    callback._average_model = AveragedModel(
        model=module, device=callback._device, use_buffers=callback._use_buffers, **callback._kwargs
    )
    return callback._average_model


def averaging_device(callback: Any) -> Any:
    """The device a ``WeightAveraging`` callback keeps its average on (None: the model's)."""
    return callback._device


def last_update_step(callback: Any) -> int:
    """The ``trainer.global_step`` of a ``WeightAveraging`` callback's last update."""
    return callback._latest_update_step


def set_last_update_step(callback: Any, step: int) -> None:
    callback._latest_update_step = step


OBSERVER = "child-process-observer"


def observers() -> list[threading.Thread]:
    """Lightning's child-process observer threads alive in this process."""
    return [t for t in threading.enumerate() if t.name == OBSERVER]


def end_ddp_children(timeout: float = 30.0) -> int:
    """Stop the observers; wait for their child ranks, killing those still running after
    ``timeout`` seconds. Returns how many were killed."""
    killed = 0
    for thread in observers():
        children = list(getattr(thread, "_child_processes", []))
        # its next poll finds no child (so none failed) and ends the thread
        thread._child_processes = []
        for proc in children:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed += 1
    return killed
