"""Lightning's DDP launcher inside a sweep: the one place the sweep code touches Lightning's
private parts, checked against pytorch-lightning 2.6 (``lightning_fabric.strategies.launchers.
subprocess_script._ChildProcessObserver``: a thread named ``child-process-observer`` with
``_child_processes``, polled every 5 s; tests/sweep/test_lightning_ddp.py fails when they change).

The observer of a DDP job SIGKILLs its whole process once a child rank exits non-zero. In a
sweep that process runs the next jobs: a DDP job that fails or is pruned (its child exits with
the same error) would kill the sweep. When a job ends, its observers are stopped and its child
ranks are waited for (ended if stuck, e.g. in a collective after rank zero failed).
"""

from __future__ import annotations

import subprocess
import threading

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
