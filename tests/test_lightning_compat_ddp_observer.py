"""Lightning's child-process observer, as visionkit.lightning_compat stops it: after a DDP
job whose child rank exited non-zero, the sweep's process must live on. Runs in a subprocess (the
observer SIGKILLs its process when the private parts this relies on have changed)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, subprocess, sys, threading, time
from lightning_fabric.strategies.launchers.subprocess_script import _ChildProcessObserver
from visionkit.lightning_compat import end_ddp_children, observers

child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
observer = _ChildProcessObserver(main_pid=os.getpid(), child_processes=[child], sleep_period=1)
observer.start()
assert observers() == [observer], threading.enumerate()
assert end_ddp_children(timeout=30) == 0 and child.returncode == 3
time.sleep(2.5)  # two polls: a failed child found there would SIGKILL this process
assert not observer.is_alive()
print("alive")
"""


def test_a_failed_child_rank_no_longer_kills_the_sweep() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "alive", (proc.returncode, proc.stderr[-2000:])  # fmt: skip
