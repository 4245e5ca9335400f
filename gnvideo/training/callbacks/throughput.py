"""Logging callbacks: clips per second (Lightning's ``ThroughputMonitor``) and the LR per parameter group."""

from __future__ import annotations

import time

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor
from lightning.pytorch.trainer.states import RunningStage

__all__ = ["ClipThroughput", "LRMonitor", "clips_in_batch"]


def clips_in_batch(batch: dict) -> int:
    """Clips in a training batch (its ``video`` rows)."""
    return int(batch["video"].shape[0])


class ClipThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` counting clips: logs ``train/device/samples_per_sec`` (clips per second on
    one device) and, under DDP, ``train/samples_per_sec`` (all devices), averaged over the last ``window_size``
    optimizer steps, with ``train/time`` (s of training), ``train/batches`` and ``train/samples`` (clips so far).

    The counts and the training time travel in checkpoints: a resumed fit continues them (rank zero's, which logs
    them) instead of starting again from 0; the per-second rates start a new window.

    Args:
        window_size: steps averaged (a value appears after this many steps).
    """

    def __init__(self, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=clips_in_batch, window_size=window_size, separator="/")
        self._module_has_flops = False  # no FLOP counts: skips Lightning's warning that flops_per_batch is missing
        self._resume: dict | None = None

    def state_dict(self) -> dict:
        stage = RunningStage.TRAINING
        if stage not in self._samples:  # not rank zero, or no training yet
            return {}
        # the clock starts at the fit's start and is moved on by each validation's duration: its reading is
        # the training time so far
        return {"samples": self._samples[stage], "batches": self._batches[stage],
                "time": time.perf_counter() - self._t0s[stage]}

    def load_state_dict(self, state_dict: dict) -> None:
        self._resume = dict(state_dict) or None

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        super().on_train_start(trainer, *args, **kwargs)  # starts the counts at 0 (rank zero)
        resume, self._resume = self._resume, None
        stage = RunningStage.TRAINING
        if resume and stage in self._samples:
            self._samples[stage], self._batches[stage] = int(resume["samples"]), int(resume["batches"])
            self._t0s[stage] = time.perf_counter() - float(resume["time"])  # train/time goes on from the checkpoint


class LRMonitor(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` that stays quiet in a run without a logger instead of stopping it."""

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        self._off = not trainer.loggers
        if not self._off:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not getattr(self, "_off", False):
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not getattr(self, "_off", False):
            super().on_train_epoch_start(trainer, *args, **kwargs)
