"""Build or load the CUDA GroupNorm extension once before a run (never inside a training step)."""

from __future__ import annotations

import lightning.pytorch as pl

__all__ = ["GroupNormKernelSetup"]


class GroupNormKernelSetup(pl.Callback):
    """Builds or loads the CUDA GroupNorm extension once before a run, never inside a step.

    ``gnvideo.ops.group_norm`` only loads an existing build (a call never compiles), so without this a GN model on a
    GPU would run the reference path. On a CUDA run whose model has GN-family layers with ``use_kernel``, local rank 0
    builds (first time only: about 2 minutes) and loads the extension, the other ranks wait at a barrier and then load
    the same build. A failed build is reported in one line and the run goes on with the reference path.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from gnvideo.models.norm_layers import GroupNorm3d

        if trainer.strategy.root_device.type != "cuda":
            return
        if not any(isinstance(m, GroupNorm3d) and m.use_kernel for m in pl_module.modules()):
            return
        from gnvideo import ops

        error = None
        if trainer.local_rank == 0:
            try:
                ops.load_extension()
            except RuntimeError as e:  # the reference path still gives the same numbers, only slower
                error = e
        trainer.strategy.barrier("gnvideo_ops_build")
        if trainer.local_rank != 0:
            try:
                ops.load_extension()
            except RuntimeError as e:
                error = e
        if error is not None:
            print(f"gnvideo: warning: GroupNorm CUDA kernel unavailable, using F.group_norm: {error}")
