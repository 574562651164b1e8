"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


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
