"""Preemption and requeue: a signal saves an exact-resume checkpoint at once, stops the fit, and requeues a SLURM job.

A cluster ends a job with a signal: SLURM sends ``--signal=USR1@90`` 90 s before the time limit, SIGTERM on
preemption or ``scancel``; a cloud VM or Kubernetes sends SIGTERM before it stops. :class:`Preemption` catches them
(``--preemption.signals``, default SIGTERM and SIGUSR1) and, at the end of the optimizer step in progress, writes the
run's ``last.ckpt`` (the kind every ``--last_checkpoint.every_n_train_steps`` writes: the exact resume point, with the
epoch's metric states, counters and the train loader's position), then stops the fit with exit status 128 + the
signal number. Under SLURM, a requeue signal (``--preemption.requeue_signals``, default SIGUSR1: the time-limit
warning; SIGTERM is also what ``scancel`` sends, so it does not requeue by default) runs ``scontrol requeue`` on the
job; the requeued job (same ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` > 0) resumes that run in the same folder
without ``--ckpt_path`` (see :mod:`gnvideo.training.runner`).

The handler only notes the signal; everything else happens between steps, on every rank at the same step (the ranks
agree with one small all-reduce per optimizer step under DDP), so no state is saved half-updated:

- at the end of an optimizer step (or of a validation, or of an epoch) the checkpoint is written;
- the fit stops where the next step or epoch would start: the step's logged row is on disk first, and a validation
  (or epoch end) that follows the step still runs and the checkpoint is written again after it, so the resumed run
  neither repeats nor skips it (Lightning resuming from a checkpoint taken just before a validation skips that
  validation). Give the signal that much lead time: one validation plus two checkpoint writes;
- rows logged so far are flushed, the attempt is recorded in the run's ``attempts.jsonl`` and, when asked, the job is
  requeued.

The handlers are set when the fit is set up, so a signal during the run's start (restoring the checkpoint, the sanity
check) is acted on after the first step, and DataLoader workers started later ignore the signals (SLURM signals
every process of a job step). A SIGTERM that comes then also makes Lightning end the fit after that step, once the
checkpoint is written (recorded the same way; 143).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gnvideo.errors import ConfigError
from gnvideo.training.run_folders import append_attempt, read_attempts

__all__ = ["Preempted", "Preemption", "requeue_slurm_job", "signal_numbers", "slurm_job_id", "slurm_restart_count"]


def signal_numbers(names, key: str = "signals") -> list[signal.Signals]:
    """Signals by name (``SIGTERM``, ``USR1``, ``sigusr2``); ConfigError ``key`` for one a process cannot catch."""
    out = []
    for name in names:
        text = str(name).strip().upper()
        sig = getattr(signal.Signals, text if text.startswith("SIG") else f"SIG{text}", None)
        if sig is None or sig in (signal.SIGKILL, signal.SIGSTOP):
            raise ConfigError(key, f"{name!r} is not a signal a process can catch (e.g. SIGTERM, SIGUSR1)")
        out.append(sig)
    return out


def slurm_job_id() -> str | None:
    """This SLURM job's id (``SLURM_JOB_ID``), None outside SLURM."""
    return os.environ.get("SLURM_JOB_ID") or None


def slurm_restart_count() -> int:
    """How often SLURM has restarted (requeued) this job (``SLURM_RESTART_COUNT``; 0 for the first start)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def requeue_slurm_job(timeout_s: float = 60.0) -> tuple[bool, str]:
    """``scontrol requeue`` this job (an array task as ``<array job id>_<task id>``); returns (done, what happened)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else slurm_job_id()
    if not job:
        return False, "not a SLURM job"
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        return False, f"scontrol not found: SLURM job {job} not requeued"
    except subprocess.TimeoutExpired:
        return False, f"scontrol requeue {job} gave no answer in {timeout_s:.0f} s"
    if proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip().splitlines()
        return False, f"scontrol requeue {job} failed (exit {proc.returncode}){': ' + said[-1] if said else ''}"
    return True, f"requeued SLURM job {job}"


class Preempted(SIGTERMException):
    """Ends a fit that a signal stopped after its checkpoint was saved; the process exits with 128 + the signal.

    Attributes:
        signal: the signal that stopped the fit.
        step: the optimizer step of the saved checkpoint.
        checkpoint: its path.
        requeued: whether the SLURM job was requeued.
    """

    def __init__(self, signum: int, step: int, checkpoint: str, requeued: bool) -> None:
        super().__init__(128 + int(signum))
        self.signal, self.step, self.checkpoint, self.requeued = signal.Signals(signum), step, checkpoint, requeued


class Preemption(Checkpoint):
    """Saves ``last.ckpt`` and stops the fit when the job gets one of ``signals``; requeues a SLURM job.

    Args:
        signals: signals that save and stop (names: SIGTERM, SIGUSR1, ...).
        requeue_signals: those of them that also requeue the job under SLURM (``scontrol requeue``).
        requeue: requeue at all (False: save and stop only; resubmit the job, it resumes the same way).

    Attributes:
        stopped_by: the signal that stopped the latest fit, else None.
        saved: the checkpoint it saved.
    """

    def __init__(self, signals: list[str] = ["SIGTERM", "SIGUSR1"],  # noqa: B006  (jsonargparse shows the default)
                 requeue_signals: list[str] = ["SIGUSR1"], requeue: bool = True) -> None:  # noqa: B006
        super().__init__()
        self.signals = signal_numbers(signals, "signals")
        self.requeue_signals = signal_numbers(requeue_signals, "requeue_signals")
        self.requeue = requeue
        self.stopped_by: signal.Signals | None = None
        self.saved: str | None = None
        self._received: int | None = None
        self._requeue_received = False
        self._originals: dict = {}
        self._active = False
        self._saved_where: str | None = None
        self._step_seen: int | None = None
        self._run: Path | None = None
        self._started = False

    # ------------------------------------------------------------------ signals
    def _note(self, signum: int, frame) -> None:
        """The signal handler: during a fit, note the signal only (the fit acts on it between steps); after it (a
        handler Lightning put back when a fit failed), do what the handler it replaced would have done."""
        if self._active:
            if self._received is None:
                self._received = signum
            self._requeue_received |= signum in self.requeue_signals
            return
        original = self._originals.get(signum, signal.SIG_DFL)
        signal.signal(signum, original if original is not None else signal.SIG_DFL)
        if callable(original):
            original(signum, frame)
        elif original in (signal.SIG_DFL, None):
            os.kill(os.getpid(), signum)  # its default action, now that it is back

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            warnings.warn("Preemption: fit not in the main thread; signals are not caught", stacklevel=2)
            return
        for sig in self.signals:
            current = signal.getsignal(sig)
            if current != self._note:
                self._originals.setdefault(sig, current)
                signal.signal(sig, self._note)
        self._active = True

    def _uninstall(self) -> None:
        """Put back the handlers found at the fit's setup."""
        self._active = False
        if threading.current_thread() is threading.main_thread():
            for sig, handler in self._originals.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._run = Path(trainer.log_dir or trainer.default_root_dir)  # a broadcast under DDP: every rank
        self.stopped_by, self.saved, self._received, self._requeue_received = None, None, None, False
        self._saved_where, self._started, self._originals = None, False, {}
        self._install()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # again: Lightning set its own SIGTERM handler (calling ours too) when the fit started; ours alone decides
        self._install()
        self._step_seen, self._started = trainer.global_step, True
        if trainer.is_global_zero and self._run is not None:
            attempt = 1 + sum(r.get("event") == "start" for r in read_attempts(self._run))
            append_attempt(self._run, {"event": "start", "attempt": attempt, "step": trainer.global_step,
                                       "resumed_from": trainer.ckpt_path, "slurm_job_id": slurm_job_id(),
                                       "slurm_restart_count": slurm_restart_count()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step != self._step_seen:  # an optimizer step ended (not inside gradient accumulation)
            self._step_seen = trainer.global_step
            self._act(trainer, "train_batch_end")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._act(trainer, "validation_end")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._act(trainer, "train_epoch_end")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.stopped_by is not None:
            self._stop(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped_by is not None:
            self._stop(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._uninstall()
        self._started = False
        if trainer.is_global_zero and self._run is not None:
            note = {"after": self.stopped_by.name} if self.stopped_by is not None else {}
            append_attempt(self._run, {"event": "finished", "step": trainer.global_step, **note})

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._uninstall()
        if isinstance(exception, Preempted) or not self._started:
            return  # a preemption is recorded when it stops the fit; before the training started, nothing is
        if isinstance(exception, SIGTERMException) and self.saved is not None:
            self._finish(trainer)  # Lightning ended the fit after our save (a SIGTERM during the run's start)
        elif trainer.is_global_zero and self._run is not None:
            event = "interrupted" if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) else "failed"
            append_attempt(self._run, {"event": event, "step": trainer.global_step,
                                       "error": f"{type(exception).__name__}: {exception}"[:500]})

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._uninstall()

    # ------------------------------------------------------------------ acting on a signal
    def _agreed(self, trainer: pl.Trainer) -> tuple[int | None, bool]:
        """The signal any rank got (the same answer on every rank) and whether any got a requeue signal."""
        got, requeue = self._received or 0, self._requeue_received
        if trainer.world_size > 1:
            votes = torch.tensor([got, int(requeue)], device=trainer.strategy.root_device)
            got, requeue = (int(v) for v in trainer.strategy.reduce(votes, reduce_op="max").tolist())
        return (got or None), bool(requeue)

    def _act(self, trainer: pl.Trainer, where: str) -> None:
        """Save when a signal came (decided together by all ranks); once stopping, save again after a validation
        or an epoch end that followed the step's save."""
        if self.stopped_by is None:
            got, self._requeue_received = self._agreed(trainer)
            if got is None:
                return
            self.stopped_by = signal.Signals(got)
        elif where == "train_batch_end" or (where == "train_epoch_end" and self._saved_where == "validation_end"):
            return
        path = self._last_path(trainer)
        trainer.save_checkpoint(path)
        self.saved, self._saved_where = path, where
        if trainer.is_global_zero:
            print(f"gnvideo: {self.stopped_by.name}: checkpoint at step {trainer.global_step} saved to {path}",
                  file=sys.stderr, flush=True)

    def _last_path(self, trainer: pl.Trainer) -> str:
        """Where the run's ``last`` checkpoint goes (that of the first ModelCheckpoint with ``save_last``)."""
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.save_last and cb.dirpath:
                metrics = {**trainer.callback_metrics, "epoch": torch.tensor(trainer.current_epoch),
                           "step": torch.tensor(trainer.global_step)}
                return cb.format_checkpoint_name(metrics, cb.CHECKPOINT_NAME_LAST)
        return str(Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints" / "last.ckpt")

    def _stop(self, trainer: pl.Trainer) -> None:
        """Flush the logs, record the attempt, requeue (rank zero) and end the fit."""
        requeued = self._finish(trainer)
        raise Preempted(self.stopped_by, trainer.global_step, str(self.saved), requeued)

    def _finish(self, trainer: pl.Trainer) -> bool:
        """Flush the logs, record the attempt and requeue (rank zero); returns whether the job was requeued."""
        for logger in trainer.loggers:
            logger.save()
        requeue = self.requeue and self._requeue_received and slurm_job_id() is not None
        requeued, what = False, "not requeued: resume with --ckpt_path last"
        if trainer.is_global_zero:
            if requeue:
                requeued, what = requeue_slurm_job()
            if self._run is not None:
                append_attempt(self._run, {"event": "preempted", "signal": self.stopped_by.name,
                                           "step": trainer.global_step, "checkpoint": self.saved,
                                           "requeued": requeued, "note": what})
            print(f"gnvideo: {self.stopped_by.name}: fit stopped at step {trainer.global_step}; {what}",
                  file=sys.stderr, flush=True)
        return requeued
