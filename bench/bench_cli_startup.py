"""Start-up cost of the CLI: ``--help``, ``list`` and two runs that stop on a user error (a
missing checkpoint, checked before torch is imported; a trainer key of the wrong type, which
needs Lightning) next to ``python -c "import torch"``."""

from __future__ import annotations

import tempfile

from common import command_time, python, write_table


def main() -> None:
    torch_s = command_time([python(), "-c", "import torch"])
    help_s = command_time([python(), "-m", "visionkit", "--help"])
    list_s = command_time([python(), "-m", "visionkit", "list"])
    failing = {  # exit code 2, one `error:` line
        "test ckpt_path=missing.ckpt": ["test", "ckpt_path=missing.ckpt"],
        "trainer.max_epochs=abc": ["trainer.max_epochs=abc"],
    }
    rows = [
        ['python -c "import torch"', torch_s, 1.0],
        ["python -m visionkit --help", help_s, help_s / torch_s],
        ["python -m visionkit list", list_s, list_s / torch_s],
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, args in failing.items():
            cmd = [python(), "-m", "visionkit", *args, "hydra.run.dir=run"]
            seconds = command_time(cmd, cwd=tmp, code=2)
            rows.append([f"python -m visionkit {name} (error)", seconds, seconds / torch_s])
    write_table(
        "cli_startup",
        "CLI start-up (median of 3, seconds; ratio to importing torch)",
        ["command", "seconds", "ratio"],
        rows,
        "`--help` does not import torch; `list` imports torch (parts register on import) but not "
        "Lightning. A missing checkpoint or data root stops before torch is imported; a trainer key "
        "of the wrong type is checked against Lightning's Trainer, so it imports Lightning first.",
    )


if __name__ == "__main__":
    main()
