"""Run logs that survive a resume: ``metrics.csv`` appended to, one saved config per attempt, rows that match the
checkpoints.

``AppendingCSVLogger`` keeps the run's ``metrics.csv`` when a fit resumes in that folder and appends to it. Each row is
on disk when it is logged (a killed process loses none), and :class:`LogsInCheckpoints` flushes every logger
(TensorBoard too) before a checkpoint is written and records in it how many rows of ``metrics.csv`` it covers. A fit
resumed from that checkpoint drops the rows the killed attempt logged after it, from the first row the resumed
attempt logs again, so the file ends as an uninterrupted run's would. ``AttemptConfigCallback`` saves
``config.yaml``, then ``config.attempt-2.yaml``, ... so no attempt's config is overwritten.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

__all__ = ["AppendingCSVLogger", "AttemptConfigCallback", "LogsInCheckpoints", "read_metrics"]

#: the key of a checkpoint that holds the ``metrics.csv`` rows it covers
CHECKPOINT_KEY = "gnvideo_logs"


def _signature(row: dict) -> tuple[str, frozenset]:
    """A row's step and the names of the values it holds (its CSV form: empty cells are absent values)."""
    return str(row.get("step")), frozenset(k for k, v in row.items() if k != "step" and v not in (None, ""))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept and appended to (resumed fits), its
    header is rewritten atomically (a kill never empties it), and the rows a resumed attempt logs again are dropped.

    Args:
        log_dir: the run folder.
        keep_rows: the rows of an existing file that a resumed attempt keeps whatever it logs (those its checkpoint
            covers); later rows are dropped from the first one that the attempt logs again (same step and same
            values named). None keeps every row.
    """

    def __init__(self, log_dir: str, keep_rows: int | None = None) -> None:
        self.keep_rows = keep_rows
        self.rows_on_disk = 0  # data rows in metrics.csv
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):  # start from its header, so new rows extend it
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.reader(f)
                self.metrics_keys = sorted(next(reader, []))
                self.rows_on_disk = sum(1 for _ in reader)

    def _write_all(self, fieldnames: list[str], rows: list[dict]) -> None:
        """Replace metrics.csv by ``rows`` in one rename."""
        partial = f"{self.metrics_file_path}.partial"
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(partial, self.metrics_file_path)
        self.rows_on_disk = len(rows)

    def _read_all(self) -> list[dict]:
        with open(self.metrics_file_path, newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._write_all(fieldnames, self._read_all())

    def _drop_logged_again(self) -> None:
        """Drop the rows after ``keep_rows`` from the first one the new attempt logs again (the first pending row)."""
        keep, self.keep_rows = self.keep_rows, None
        if keep is None or not self.metrics or not os.path.isfile(self.metrics_file_path):
            return
        rows, first = self._read_all(), _signature(self.metrics[0])
        for i in range(min(keep, len(rows)), len(rows)):
            if _signature(rows[i]) == first:
                self._write_all(self.metrics_keys, rows[:i])
                return

    def save(self) -> None:
        if not self.metrics:
            return
        if "://" not in self.metrics_file_path:
            self._drop_logged_again()
        written = len(self.metrics)
        super().save()
        self.rows_on_disk += written


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to the run's ``metrics.csv`` instead of deleting it when a fit resumes there, and
    writes each row as it is logged.

    A resumed fit keeps the rows its checkpoint covers and drops the killed attempt's later rows that it logs again
    (:meth:`keep_rows`, called by :class:`LogsInCheckpoints` when the checkpoint is loaded).

    Args:
        keep_rows: for a fit that starts over in a run folder without a checkpoint (a requeued job killed before its
            first one): 0 (the new rows replace the old from the first logged again); None keeps every row.
        **kwargs: ``CSVLogger``'s (save_dir, name, version, ...).
    """

    def __init__(self, *args, keep_rows: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._keep_rows = keep_rows

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir, keep_rows=self._keep_rows)
        return self._experiment

    @rank_zero_only
    def keep_rows(self, rows: int) -> None:
        """Keep the first ``rows`` rows of metrics.csv; drop later ones from the first that this attempt logs again."""
        self._keep_rows = rows
        if self._experiment is not None:
            self._experiment.keep_rows = rows

    @property
    def rows_on_disk(self) -> int:
        """Data rows in metrics.csv (rank zero; 0 elsewhere)."""
        experiment = self.experiment  # a stand-in that answers anything on the other ranks
        return experiment.rows_on_disk if isinstance(experiment, _AppendingWriter) else 0

    @rank_zero_only
    def log_metrics(self, metrics, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.save()  # on disk at once: a SIGKILL loses no logged row


class LogsInCheckpoints(pl.Callback):
    """Every row logged so far is on disk before a checkpoint is written, and the checkpoint records how many
    ``metrics.csv`` rows it covers; loading it tells the run's :class:`AppendingCSVLogger` to keep those rows.

    Lightning logs a step's metrics right after the step's checkpoint hooks; that row is written when it is logged,
    and a resumed attempt (which starts with the next step) never logs it again, so it is kept.
    """

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()
            flush = getattr(getattr(logger, "experiment", None), "flush", None)  # TensorBoard's SummaryWriter
            if callable(flush):
                flush()
        rows = [lg.rows_on_disk for lg in trainer.loggers if isinstance(lg, AppendingCSVLogger)]
        if rows:
            checkpoint[CHECKPOINT_KEY] = {"metrics_rows": rows[0]}

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        rows = (checkpoint.get(CHECKPOINT_KEY) or {}).get("metrics_rows")
        if rows is None or trainer.state.fn != "fit":
            return
        for logger in trainer.loggers:
            if isinstance(logger, AppendingCSVLogger):
                logger.keep_rows(int(rows))


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

    A step logged twice (a file from before resumed fits dropped repeated rows) counts with its later row.
    """
    out: dict[int, float] = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get(key) not in (None, ""):
                out[int(row["step"])] = float(row[key])
    return out
