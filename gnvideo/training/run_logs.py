"""Run logs that survive a resume: ``metrics.csv`` appended to, one saved config per attempt.

``AppendingCSVLogger`` keeps the run's ``metrics.csv`` when a fit resumes in that folder and appends to it (the steps
the killed attempt ran after its last checkpoint are logged again; :func:`read_metrics` takes the later row of a
step). ``AttemptConfigCallback`` saves ``config.yaml``, then ``config.attempt-2.yaml``, ... so no attempt's
config is overwritten.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["AppendingCSVLogger", "AttemptConfigCallback", "read_metrics"]


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept and appended to (resumed fits)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # start from its header, so new rows extend it
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run's ``metrics.csv`` instead of deleting it when a fit resumes there.

    Rows of the killed attempt stay; the steps it ran after its last checkpoint are logged again by the resumed
    attempt (later rows of a step replace earlier ones: see :func:`read_metrics`).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class AttemptConfigCallback(SaveConfigCallback):
    """Saves the config as ``config.yaml``, or ``config.attempt-N.yaml`` (N = 2, 3, ...) when a resumed fit finds
    the earlier attempts' configs in the run folder, so none is overwritten."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not self.already_saved:
            name = None
            if trainer.is_global_zero:
                log_dir = trainer.log_dir or ""
                stem, ext = os.path.splitext(self.config_filename)
                name, n = self.config_filename, 1
                while os.path.exists(os.path.join(log_dir, name)):
                    n += 1
                    name = f"{stem}.attempt-{n}{ext}"
            else:
                trainer.log_dir  # noqa: B018  (log_dir broadcasts: keep the ranks in step with rank 0)
            self.config_filename = trainer.strategy.broadcast(name)
        super().setup(trainer, pl_module, stage)


def read_metrics(run_dir: str | Path, key: str) -> dict[int, float]:
    """``key``'s value per step from a run's ``metrics.csv``.

    A resumed fit appends to the file; the steps its killed attempt ran after the last checkpoint are logged again,
    and the later row of a step wins.
    """
    out: dict[int, float] = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get(key) not in (None, ""):
                out[int(row["step"])] = float(row[key])
    return out
