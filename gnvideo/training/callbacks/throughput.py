"""Logging callbacks: clips per second (Lightning's ``ThroughputMonitor``) and the LR per parameter group."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor, ThroughputMonitor

__all__ = ["ClipThroughput", "LRMonitor", "clips_in_batch"]


def clips_in_batch(batch: dict) -> int:
    """Clips in a training batch (its ``video`` rows)."""
    return int(batch["video"].shape[0])


class ClipThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` counting clips: logs ``train/device/samples_per_sec`` (clips per second on
    one device) and, under DDP, ``train/samples_per_sec`` (all devices), averaged over the last ``window_size``
    optimizer steps, with ``train/time`` (s) and ``train/samples`` (clips so far).

    Args:
        window_size: steps averaged (a value appears after this many steps).
    """

    def __init__(self, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=clips_in_batch, window_size=window_size, separator="/")
        self._module_has_flops = False  # no FLOP counts: skips Lightning's warning that flops_per_batch is missing


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
