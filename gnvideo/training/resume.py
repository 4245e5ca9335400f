"""Exact resume: the RNG states of every rank, the train loader's position and the epoch's training metrics, saved
and restored with a fit.

Together with the resumable train loader (:class:`gnvideo.data.sampling.ResumableDataLoader`) and Lightning's own
loop, optimizer and scheduler state, a fit killed mid-epoch and resumed with ``--ckpt_path last`` ends bit-identical
on the CPU to an uninterrupted one, and logs the same epoch metrics (``tests/training/test_resume_exact.py``).
"""

from __future__ import annotations

import random
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from torchmetrics import Metric

__all__ = ["ExactResume", "StepCheckpoint", "get_metric_states", "get_rng_state", "set_metric_states",
           "set_rng_state"]


def get_rng_state() -> dict:
    """This process's RNG states: torch CPU, CUDA (all devices, when initialized), numpy and python ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "gauss": float(gauss)}  # tensors and plain types: weights_only loads
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` returned."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.detach().to(device, copy=True)
    return [_to(v, device) for v in value]  # a list state ("cat" metrics)


def get_metric_states(module: torch.nn.Module, names: list[str]) -> dict[str, dict]:
    """The states of the torchmetrics ``Metric`` submodules ``names`` of ``module``, copied to the CPU."""
    cpu = torch.device("cpu")
    return {name: {k: _to(v, cpu) for k, v in module.get_submodule(name).metric_state.items()} for name in names}


def set_metric_states(module: torch.nn.Module, states: dict[str, dict]) -> None:
    """Put back what :func:`get_metric_states` returned (each state on its metric's device)."""
    for name, state in states.items():
        metric = module.get_submodule(name)
        metric.load_state_dict({k: _to(v, metric.device) for k, v in state.items()}, strict=False)


class ExactResume(pl.Callback):
    """What a fit resumed mid-epoch needs beyond Lightning's own restore, so that it ends bit-identical.

    - RNG states of every rank (torch CPU, CUDA, numpy, python ``random``) are saved in each checkpoint (taken when it
      is written, gathered from all ranks into the one rank 0 writes) and put back in ``on_train_start``, before the
      first resumed step: the same dropout masks and other global-RNG draws as the uninterrupted run. A checkpoint
      of another world size restores none (warned).
    - The epoch's training metrics: the torchmetrics a training step updates (``train/top1`` ...) hold the epoch so
      far; their states are saved with each rank's RNG states and put back when the resumed fit continues inside
      that epoch, so the epoch's ``*_epoch`` values are the uninterrupted run's. A resume that starts a new epoch
      restores none (the epoch they covered has been logged).
    - The train loader's position: Lightning saves the state of a stateful train loader (``ResumableDataLoader``)
      but loads it only when it builds the loader after the restore; when ``configure_optimizers`` asked for
      ``trainer.estimated_stepping_batches`` the loader was built before, and the saved position would be dropped.
      Here it is loaded in ``on_train_start`` into the loader Lightning holds (its iterators start lazily, at the
      first batch, so the position still applies).
    """

    def __init__(self) -> None:
        self._to_restore: list | None = None
        self._loader_states: list | None = None
        self._module: torch.nn.Module | None = None
        self._train_metrics: list[str] = []

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._module = pl_module

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # the metrics training updates: at a train batch end those of validation are reset (Lightning resets them
        # when a validation ends), so updated ones are training's. Checkpoints are written after this hook.
        if not self._train_metrics:
            self._train_metrics = [name for name, m in pl_module.named_modules()
                                   if isinstance(m, Metric) and m.update_called]

    def state_dict(self) -> dict:
        mine = get_rng_state()
        if self._module is not None and self._train_metrics:
            mine["metrics"] = get_metric_states(self._module, self._train_metrics)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states: list = [None] * dist.get_world_size()
            dist.all_gather_object(states, mine)
        else:
            states = [mine]
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict) -> None:
        self._to_restore = list(state_dict.get("ranks") or []) or None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._loader_states = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get(
            "combined_loader")

    def _load_loader_states(self, trainer: pl.Trainer) -> None:
        states, self._loader_states = self._loader_states, None
        loaders = trainer.train_dataloader
        if not states or loaders is None:
            return
        loaders = list(loaders.values()) if isinstance(loaders, dict) else loaders
        stateful = [dl for dl in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
                    if callable(getattr(dl, "state_dict", None)) and callable(getattr(dl, "load_state_dict", None))]
        for loader, state in zip(stateful, states):
            loader.load_state_dict(state)  # the same states Lightning may have loaded: loading is idempotent

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_metrics = []
        self._load_loader_states(trainer)
        states, self._to_restore = self._to_restore, None
        if states is None:
            return
        if len(states) != trainer.world_size:
            warnings.warn(f"ExactResume: checkpoint has RNG states of {len(states)} ranks, this run has "
                          f"{trainer.world_size}; RNG states and epoch metrics not restored", stacklevel=2)
            return
        set_rng_state(states[trainer.global_rank])
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.processed < trainer.num_training_batches:  # resumes inside the epoch (else a new one starts)
            set_metric_states(pl_module, states[trainer.global_rank].get("metrics") or {})


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` (the ``last_checkpoint`` group) whose step-triggered save on an epoch's last step is written
    when that epoch ends: after its validation and its epoch metrics.

    Lightning, resuming from a checkpoint of an epoch's last step, goes on with the next epoch and skips the end of
    that one (its validation, its ``*_epoch`` rows, ``on_train_epoch_end`` callbacks): killed during that validation,
    the run would lose them. A checkpoint of the epoch's end resumes where it should.

    When the fit ends, ``last.ckpt`` is written unless it already holds the final step (Lightning writes it then only
    if this callback never saved, so a fit whose last step is no multiple of ``every_n_train_steps`` kept an older
    one, and ``--ckpt_path last`` tested other weights than the trained ones).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._deferred = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.automatic_optimization and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._deferred = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._deferred:  # the step rule, applied now (same global step; the batch is not used)
            self._deferred = False
            super().on_train_batch_end(trainer, pl_module, None, None, -1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.save_last and not trainer.fast_dev_run and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
