"""CPU time (user+sys) of CLI processes with and without the exit's garbage collection: the CLI
freezes the collector once its command has ended (visionkit/__main__.py, skip_exit_collection);
the reference runs the same command through ``main(argv)``, which leaves the collector alone, so
the interpreter's shutdown collects every object torch, torchvision and Lightning left."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import tempfile

from common import python, write_table

# main(argv) as called in-process: the same command, the exit collection kept
REFERENCE = "import sys; from visionkit.__main__ import main; main(sys.argv[1:])"
FAST = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.accelerator=cpu",
    "data.num_workers=0",
    "callbacks.progress=null",
]


def cpu_seconds(args: list[str], cwd: str, code: int, repeats: int = 3) -> float:
    """Median CPU seconds (user+sys) of the subprocess ``args``, which must exit with ``code``."""
    env = {**os.environ, "VISIONKIT_DATA_DIR": os.path.join(cwd, "data"), "OMP_NUM_THREADS": "1"}
    times = []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(args, capture_output=True, cwd=cwd, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != code:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]!r}")  # fmt: skip
        times.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(times)


def main() -> None:
    commands = {  # name -> (arguments, exit code)
        "list": (["list"], 0),
        "trainer.max_epochs=abc (error)": (["trainer.max_epochs=abc", "hydra.run.dir=err"], 2),
        "train, 1 epoch of 2 batches": ([*FAST, "hydra.run.dir=run"], 0),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([python(), "-m", "visionkit", *FAST, "hydra.run.dir=warm"], cwd=tmp, env={**os.environ, "VISIONKIT_DATA_DIR": os.path.join(tmp, "data")}, capture_output=True, check=True)  # fmt: skip
        for name, (args, code) in commands.items():
            frozen = cpu_seconds([python(), "-m", "visionkit", *args], tmp, code)
            collected = cpu_seconds([python(), "-c", REFERENCE, *args], tmp, code)
            rows.append([f"python -m visionkit {name}", collected, frozen, collected - frozen])
    write_table(
        "cli_exit",
        "CLI processes, CPU seconds (user+sys, median of 3) with the exit collection and without",
        ["command", "collected at exit", "frozen (the CLI)", "saved"],
        rows,
        "Lightning's DDP children run the same entry, so each rank saves as much. atexit handlers "
        "(logging, Lightning's, MLflow's, W&B's) still run; only objects in reference cycles are "
        "left unfinalised at exit.",
    )


if __name__ == "__main__":
    main()
