"""User-facing errors: the CLI prints their message on one line and exits non-zero."""

from __future__ import annotations


class VisionkitError(Exception):
    """A user mistake (bad name, bad config, bad file); the message says what and where."""


class RegistryError(VisionkitError, KeyError):
    """Unknown or conflicting registry name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ConfigError(VisionkitError, ValueError):
    """A config value that cannot work (wrong type, out of range, missing key)."""


class DataError(VisionkitError, ValueError):
    """A data file or annotation that cannot be read; names the file and annotation id."""


class PluginError(VisionkitError, ImportError):
    """A plugin that failed to load, in strict mode."""


class ExportError(VisionkitError, RuntimeError):
    """An exported model that does not reproduce the eager one (the export check failed)."""


def user_message(exc: BaseException) -> str:
    """The one line a user sees for ``exc``. An error raised in a DataLoader worker comes back
    from torch as "Caught DataError in DataLoader worker process 0. Original Traceback ...":
    only the original message is kept; any remaining line breaks become spaces."""
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        cls = type(exc)
        for name in (f"{cls.__module__}.{cls.__qualname__}: ", f"{cls.__qualname__}: "):
            if name in text:
                text = text.rsplit(name, 1)[1]
                break
    return " ".join(line.strip() for line in text.splitlines() if line.strip())
