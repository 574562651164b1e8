"""The default experiment as `make run` runs it: wall time (start-up and data generation included)
and the accuracy it reaches, from an empty data cache."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import python, write_table


def main() -> None:
    work = Path(tempfile.mkdtemp())
    env = {**os.environ, "VISIONKIT_DATA_DIR": str(work / "data")}
    start = time.perf_counter()
    subprocess.run(
        [python(), "-m", "visionkit", "hydra.run.dir=run", "callbacks.progress=null"],
        cwd=work, env=env, check=True, capture_output=True,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    results = json.loads((work / "run" / "results.json").read_text())
    write_table(
        "default_run",
        "Default experiment (`make run`): shapes classification, simple_cnn, 6 epochs, empty cache",
        ["wall s", "val/acc", "test/acc", "goal"],
        [[seconds, results["val/acc"], results["test/acc"], "val/acc >= 0.95 within 180 s"]],
    )


if __name__ == "__main__":
    main()
