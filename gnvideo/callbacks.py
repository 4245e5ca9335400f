"""Callbacks: precise BN statistics, LR logging (and, from the records work, result writers).

``PreciseBN`` follows the Non-local recipe (``TRAIN.COMPUTE_PRECISE_BN``, ``ITER_COMPUTE_PRECISE_BN: 200``): before
each validation during ``fit`` and once more when training ends, the running statistics of every batch-dependent norm
layer (``gnvideo.models.norms.BATCH_DEPENDENT_KINDS``: bn, syncbn, sub_bn, bgn) are recomputed as the plain average of
the batch statistics of ``num_batches`` training batches under the current weights, instead of the exponential average
collected while the weights moved. The checkpoints saved after it (``best``, ``last``) hold these statistics, so
``gnvideo test`` of a checkpoint scores them. Models without such layers (gn, ln, in, frozen_bn) are left alone.
"""

from __future__ import annotations

import itertools
import random
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import LearningRateMonitor
from torch import nn

from gnvideo.models.norm_layers import BatchGroupNorm3d

__all__ = ["ExactResume", "LRMonitor", "PreciseBN", "batch_norm_layers", "get_rng_state", "set_rng_state",
           "update_bn_stats"]


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


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose running statistics come from training batches (BN with running stats, sub_bn, bgn)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            out.append(m)
        elif isinstance(m, BatchGroupNorm3d):
            out.append(m)
    return out


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches, forward=None) -> int:
    """Set the running mean and variance of every batch-dependent norm of ``model`` to the average over ``batches``.

    Args:
        model: the network; run in train mode for the pass and put back in its previous mode.
        batches: an iterable of inputs for ``forward``.
        forward: ``forward(batch)`` runs the model (default ``model(batch)``).

    Returns:
        The number of batches used (0 leaves the statistics as they were).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    forward = forward or model
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    was_training = model.training
    model.train()
    n = 0
    try:
        for i, batch in enumerate(batches):
            for m in layers:
                m.momentum = 1.0 / (i + 1)  # running = mean of the i+1 batch statistics so far
            forward(batch)
            n += 1
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        if n == 0:
            for m, (mean, var) in zip(layers, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        model.train(was_training)
    return n


class PreciseBN(pl.Callback):
    """Recompute BN statistics over ``num_batches`` training batches before each validation of ``fit`` and at its end.

    Args:
        num_batches: training batches per recomputation (200 in the Non-local recipe); 0 turns it off.
        on_test: also recompute before ``test`` / ``validate`` runs outside ``fit`` (for checkpoints trained without
            it, e.g. imported ones); off by default because fit's checkpoints already hold the recomputed statistics.
    """

    def __init__(self, num_batches: int = 200, on_test: bool = False) -> None:
        if num_batches < 0:
            raise ValueError(f"precise_bn.num_batches must be >= 0, got {num_batches}")
        self.num_batches = int(num_batches)
        self.on_test = bool(on_test)
        self._done_at: int | None = None

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.num_batches == 0 or self._done_at == trainer.global_step:
            return
        if hasattr(pl_module, "load_initial_weights"):  # callbacks' start hooks run before the module's
            pl_module.load_initial_weights()
        model = getattr(pl_module, "model", pl_module)
        layers = batch_norm_layers(model)
        if not layers:
            return  # batch-independent norms only: nothing to recompute
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "train_dataset", True) is None:
            dm.setup("fit")  # test / validate runs: the training videos are not set up yet
        loader = dm.train_dataloader() if dm is not None else trainer.fit_loop._data_source.dataloader()

        def forward(batch):
            batch = trainer.strategy.batch_to_device(batch)  # with the module's batch-transfer hooks
            with trainer.precision_plugin.forward_context():
                pl_module(batch["video"])

        n = update_bn_stats(model, itertools.islice(iter(loader), self.num_batches), forward)
        del loader
        self._done_at = trainer.global_step
        if trainer.is_global_zero:
            print(f"precise BN: statistics of {len(layers)} layers from {n} training batches (step "
                  f"{trainer.global_step})")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.state.fn == "fit" and not trainer.sanity_checking) or (trainer.state.fn == "validate"
                                                                           and self.on_test):
            self._run(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_test:
            self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the last epoch: before ModelCheckpoint (Lightning runs checkpoint callbacks last) saves last.ckpt
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if last_epoch or last_step or trainer.should_stop:
            self._run(trainer, pl_module)


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


class ExactResume(pl.Callback):
    """What a fit resumed mid-epoch needs beyond Lightning's own restore, so that it ends bit-identical.

    - RNG states of every rank (torch CPU, CUDA, numpy, python ``random``) are saved in each checkpoint (taken when it
      is written, gathered from all ranks into the one rank 0 writes) and put back in ``on_train_start``, before the
      first resumed step: the same dropout masks and other global-RNG draws as the uninterrupted run. A checkpoint
      of another world size restores none (warned).
    - The train loader's position: Lightning saves the state of a stateful train loader (``ResumableDataLoader``)
      but loads it only when it builds the loader after the restore; when ``configure_optimizers`` asked for
      ``trainer.estimated_stepping_batches`` the loader was built before, and the saved position would be dropped.
      Here it is loaded in ``on_train_start`` into the loader Lightning holds (its iterators start lazily, at the
      first batch, so the position still applies).
    """

    def __init__(self) -> None:
        self._to_restore: list | None = None
        self._loader_states: list | None = None

    def state_dict(self) -> dict:
        mine = get_rng_state()
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
        self._load_loader_states(trainer)
        states, self._to_restore = self._to_restore, None
        if states is None:
            return
        if len(states) != trainer.world_size:
            warnings.warn(f"ExactResume: checkpoint has RNG states of {len(states)} ranks, this run has "
                          f"{trainer.world_size}; RNG states not restored", stacklevel=2)
            return
        set_rng_state(states[trainer.global_rank])
