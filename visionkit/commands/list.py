"""``python -m visionkit list [FAMILY] [PATTERN]``: one ``FAMILY NAME SOURCE`` line per entry.

A name supplied by several packages has one line per package (a clash: see ``plugins.prefer``).

Plain text, sorted, for people and scripts alike. Imports torch (parts register on import) but
never pytorch_lightning: tasks, datamodules and callbacks are registered lazily.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="visionkit list", description="List registered parts: FAMILY NAME SOURCE."
    )
    parser.add_argument(
        "family", nargs="?", default="*", help="registry, e.g. norms (default: all)"
    )
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'res*'")
    parser.add_argument("--strict", action="store_true", help="fail when a plugin fails to load")
    args = parser.parse_args(list(argv))

    from visionkit.plugins import load_all
    from visionkit.registries import ALL

    load_all(strict=args.strict)
    family = args.family.lower()
    if family != "*" and family not in ALL:
        close = difflib.get_close_matches(family, ALL, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(
            f"error: unknown family '{args.family}'.{hint} Families: {', '.join(ALL)}",
            file=sys.stderr,
        )
        raise SystemExit(2)
    lines = [
        f"{name} {key} {entry.source}"
        for name, registry in sorted(ALL.items())
        if family in ("*", name)
        for key in registry.names(args.pattern)
        for entry in registry.suppliers(key)
        if entry.name == key
    ]
    print("\n".join(lines))
    return 0
