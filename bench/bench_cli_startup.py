"""Start-up cost of the CLI: ``--help`` and ``list`` next to ``python -c "import torch"``."""

from __future__ import annotations

from common import command_time, python, write_table


def main() -> None:
    torch_s = command_time([python(), "-c", "import torch"])
    help_s = command_time([python(), "-m", "visionkit", "--help"])
    list_s = command_time([python(), "-m", "visionkit", "list"])
    rows = [
        ['python -c "import torch"', torch_s, 1.0],
        ["python -m visionkit --help", help_s, help_s / torch_s],
        ["python -m visionkit list", list_s, list_s / torch_s],
    ]
    write_table(
        "cli_startup",
        "CLI start-up (median of 3, seconds; ratio to importing torch)",
        ["command", "seconds", "ratio"],
        rows,
        "`--help` does not import torch; `list` imports torch (parts register on import) but not Lightning.",
    )


if __name__ == "__main__":
    main()
