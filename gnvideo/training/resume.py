"""Exact resume: the RNG states of every rank and the train loader's position, saved and restored with a fit.

Together with the resumable train loader (:class:`gnvideo.data.sampling.ResumableDataLoader`) and Lightning's own
loop, optimizer and scheduler state, a fit killed mid-epoch and resumed with ``--ckpt_path last`` ends bit-identical
on the CPU to an uninterrupted one (``tests/training/test_resume_exact.py``).
"""

from __future__ import annotations

import random
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist

__all__ = ["ExactResume", "get_rng_state", "set_rng_state"]


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
