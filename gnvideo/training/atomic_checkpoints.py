"""Checkpoint files that are whole or absent: :class:`AtomicCheckpointIO` writes them, :func:`checkpoint_problem` checks
them before a resume.

Lightning's ``TorchCheckpointIO`` serializes the checkpoint into memory and lets fsspec write a temporary file in the
system temp folder, then moves it into place; when that folder is on another filesystem than the run (``/tmp`` on a
node, the run on a shared disk) the move is a copy, and a job killed during it leaves a truncated ``last.ckpt``. It
also never syncs the file to disk. :class:`AtomicCheckpointIO` writes the checkpoint to a hidden file next to its
target (``checkpoints/.last.ckpt.<pid>.partial``), syncs it, and renames it over the target, so a kill at any moment
leaves either the previous checkpoint or the new one (``tests/training/test_atomic_checkpoints.py``).
"""

from __future__ import annotations

import contextlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "checkpoint_problem", "partial_files"]

PARTIAL_SUFFIX = ".partial"


def partial_files(path: str | os.PathLike) -> list[Path]:
    """The unfinished writes of checkpoint ``path`` that killed processes left behind (hidden ``.partial`` files)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"))


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves replace the target file in one rename: never a half-written checkpoint.

    The checkpoint is written straight into ``.<name>.<pid>.partial`` in the target's folder (no second copy in
    memory), flushed and ``fsync``-ed, then renamed over ``<name>`` and the folder synced. Partial files of earlier,
    killed writes of the same target are removed first. Remote paths (``s3://``, ...) fall back to Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in partial_files(path):
            stale.unlink(missing_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}{PARTIAL_SUFFIX}")
        try:
            with open(partial, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)


def checkpoint_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a checkpoint to resume from (empty, truncated, not a torch zip file), else None.

    Reads only the zip directory at the end of the file (cheap for a large checkpoint); a torch file in the legacy
    (non-zip) format is not checked.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        with open(path, "rb") as f:
            head = f.read(4)
        if head != b"PK\x03\x04":  # not a zip archive: a legacy torch pickle, or garbage torch.load will name
            return None
        with zipfile.ZipFile(path) as z:
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist()):
                return "no data.pkl record (not a torch checkpoint)"
    except zipfile.BadZipFile as e:
        return f"truncated or damaged ({e})"
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    return None
