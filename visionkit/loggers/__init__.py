"""Our loggers and what we hand to the experiment trackers: the CSVLogger that survives a resume
(``resumable_csv``) and the run's files (config, results.json, pictures) for every logger that
stores files (``run_files``)."""

from visionkit.loggers.resumable_csv import CSVLogger
from visionkit.loggers.run_files import publish_run, run_pictures

__all__ = ["CSVLogger", "publish_run", "run_pictures"]
