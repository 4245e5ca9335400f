"""Callbacks the training tests pass to ``gnvideo`` by class path (this folder is put on sys.path / PYTHONPATH)."""

from __future__ import annotations

import json
import os
import signal

import lightning.pytorch as pl
import torch


class KillAtStep(pl.Callback):
    """Simulates a crash after optimizer step ``step`` (after the step's checkpoint was written): raises, or with
    ``sigkill`` kills its own process (no cleanup, no log flush), like a preempted job."""

    def __init__(self, step: int, sigkill: bool = False) -> None:
        self.step, self.sigkill = step, sigkill

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            if self.sigkill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated kill at step {trainer.global_step}")


class BNProbe(pl.Callback):
    """Records, on every rank, what the first BatchNorm3d did with its input in the first training steps.

    For each step: the per-channel mean of the BN input (this rank's batch), and whether the running mean moved by
    exactly ``momentum * (local batch mean - previous running mean)``, i.e. the BN used this rank's batch only.
    Writes ``{out_dir}/bn_rank{rank}.json``.
    """

    def __init__(self, out_dir: str, steps: int = 2) -> None:
        self.out_dir, self.steps, self.records, self._bn = out_dir, steps, [], None

    def on_train_start(self, trainer, pl_module) -> None:
        self._bn = next(m for m in pl_module.modules() if isinstance(m, torch.nn.BatchNorm3d))

        def pre(module, args):
            if module.training and len(self.records) < self.steps:
                x = args[0].detach().double()
                self._pending = (x.mean(dim=(0, 2, 3, 4)), module.running_mean.detach().double().clone(), x.shape[0])

        def post(module, args, out):
            if getattr(self, "_pending", None) is None:
                return
            batch_mean, before, n = self._pending
            self._pending = None
            expected = (1 - module.momentum) * before + module.momentum * batch_mean
            after = module.running_mean.detach().double()
            self.records.append({"batch_mean": batch_mean.tolist(), "batch": n,
                                 "local_update": bool(torch.allclose(after, expected, atol=1e-5, rtol=1e-4))})

        self._bn.register_forward_pre_hook(pre)
        self._bn.register_forward_hook(post)

    def on_train_end(self, trainer, pl_module) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, f"bn_rank{trainer.global_rank}.json"), "w") as f:
            json.dump({"world_size": trainer.world_size, "records": self.records}, f)
