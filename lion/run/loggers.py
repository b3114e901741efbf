"""A CSV logger that continues the file of the run it resumes.

Lightning's CSVLogger deletes an existing `metrics.csv` when it starts, so a resumed run would lose the metrics of
the epochs before the interruption. This one keeps the file (the pipeline first drops the rows a killed run wrote
after its last checkpoint) and appends under the same header.
"""
from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as f:
            rows = list(csv.DictReader(f))
            header = list(rows[0].keys()) if rows else []
        if not header:
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
        self.metrics_keys = sorted(header)
        if header != self.metrics_keys:  # appended rows follow the sorted header
            with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.metrics_keys)
                w.writeheader()
                w.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """lightning.pytorch.loggers.CSVLogger that appends to an existing metrics.csv instead of deleting it."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
