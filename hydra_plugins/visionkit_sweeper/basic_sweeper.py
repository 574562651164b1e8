"""visionkit's grid sweeper (conf/hydra/sweeper/basic.yaml: the default, in place of Hydra's):
Hydra's ``BasicSweeper``, going on past failed jobs.

Hydra's ``BasicSweeper`` re-raises the first failed job's exception after its batch: the remaining
batches never run and the sweep ends with a traceback and exit code 1. This one runs every job,
then lists the failed ones (their ``results.json`` hold ``status`` and ``error``) in one summary;
only a sweep in which every job failed is an error (one line, exit code 2).
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class VisionkitBasicSweeper(BasicSweeper):
    """The cartesian product of the sweep overrides, every job run whatever the others do."""

    def sweep(self, arguments: list[str]) -> Any:
        from visionkit.sweep.job import sweep_errors_to_exit, sweep_outcome

        with sweep_errors_to_exit():
            parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
            overrides = parser.parse_overrides([*self._parse_config(), *arguments])
            self.overrides = self.split_arguments(overrides, self.max_batch_size)
            sweep_dir = Path(self.config.hydra.sweep.dir)
            sweep_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
            returns: list[Sequence[Any]] = []
            index = 0
            while not self.is_done():
                batch = self.get_job_batch()
                self.validate_batch_is_legal(batch)
                returns.append(self.launcher.launch(batch, initial_job_idx=index))
                index += len(batch)
            sweep_outcome([r for batch in returns for r in batch], sweep_dir)
            return returns
