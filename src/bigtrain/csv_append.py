"""A CSV logger for resumed runs: metrics.csv keeps the rows written before the resume.

Lightning's CSV writer deletes an existing metrics.csv when it starts in a folder that is not
empty, and rewrites the file with only the columns it has seen itself when a new column
appears. A resumed run starts with the existing header as its known columns and never deletes,
so rows are appended and a new column widens the file without losing earlier rows.
"""

from __future__ import annotations

import csv
import os

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:
        """Keep metrics.csv: it holds the run's history before the resume."""


class AppendingCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
