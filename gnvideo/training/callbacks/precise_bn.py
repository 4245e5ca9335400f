"""Precise BN, as in the Non-local recipe (``TRAIN.COMPUTE_PRECISE_BN``, ``ITER_COMPUTE_PRECISE_BN: 200``).

Before each validation during ``fit`` and once more when training ends, the running statistics of every
batch-dependent norm layer (``gnvideo.models.norms.BATCH_DEPENDENT_KINDS``: bn, syncbn, sub_bn, bgn) are recomputed as
the plain average of the batch statistics of ``num_batches`` training batches under the current weights, instead of
the exponential average collected while the weights moved. The checkpoints saved after it (``best``, ``last``) hold
these statistics, so ``gnvideo test`` of a checkpoint scores them. Models without such layers (gn, ln, in, frozen_bn)
are left alone.
"""

from __future__ import annotations

import itertools

import lightning.pytorch as pl
import torch
from torch import nn

from gnvideo.models.norm_layers import BatchGroupNorm3d

__all__ = ["PreciseBN", "batch_norm_layers", "update_bn_stats"]


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
