"""Callbacks the training tests pass to ``gnvideo`` by class path (this folder is put on sys.path / PYTHONPATH)."""

from __future__ import annotations

import io
import json
import os
import signal

import lightning.pytorch as pl
import torch


class KillAtStep(pl.Callback):
    """Simulates a crash after optimizer step ``step`` (after the step's checkpoint was written): raises, or with
    ``sigkill`` kills its own process (no cleanup, no log flush), like a preempted job. With ``at_validation`` the
    crash comes when the first validation after that step starts instead."""

    def __init__(self, step: int, sigkill: bool = False, at_validation: bool = False) -> None:
        self.step, self.sigkill, self.at_validation = step, sigkill, at_validation

    def _kill(self, trainer) -> None:
        if trainer.global_step >= self.step and not trainer.sanity_checking:
            if self.sigkill:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated kill at step {trainer.global_step}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.at_validation:
            self._kill(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.at_validation:
            self._kill(trainer)


class SignalAtStep(pl.Callback):
    """Sends ``signal`` once, after optimizer step ``step``, to this process, or to its whole process group (as SLURM
    signals a job step: the DataLoader workers get it too); with ``at_epoch_end`` in ``on_train_epoch_end`` of the
    epoch that reaches ``step`` instead, with ``at_fit_start`` when the fit starts (before the checkpoint is restored
    and the sanity check); with ``rank``, only that DDP rank signals itself."""

    def __init__(self, step: int = 0, signal: str = "SIGUSR1", group: bool = False, at_epoch_end: bool = False,
                 at_fit_start: bool = False, rank: int | None = None) -> None:
        self.step, self.signum, self.group, self.at_epoch_end, self.sent = step, signal, group, at_epoch_end, False
        self.at_fit_start, self.rank = at_fit_start, rank

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.at_fit_start:
            self._send(trainer)

    def _send(self, trainer) -> None:
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if not self.sent and trainer.global_step >= self.step:
            self.sent = True
            sig = getattr(signal, self.signum)
            os.killpg(os.getpgid(0), sig) if self.group else os.kill(os.getpid(), sig)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.at_epoch_end and not self.at_fit_start:
            self._send(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.at_epoch_end:
            self._send(trainer)


class KillDuringSave(pl.Callback):
    """SIGKILLs its own process in the middle of writing the first checkpoint of optimizer step ``step``: half of
    the file's bytes are written and flushed, then the process dies (a kill during a save)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if trainer is not None and trainer.global_step != self.step:
            return
        real_save = torch.save

        def half_then_kill(obj, f, *args, **kwargs):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_kill  # the checkpoint is written right after this hook


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
