"""decord reading (decord2, ``import decord``): fast random access for files whose packet times are presentation
times; a file decord fails on mid-read switches to PyAV for good."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch.utils.dlpack import from_dlpack

from .base import VideoReader, resize_frames
from .errors import VideoDecodeError, check_file
from .pyav_reader import PyAVReader

logger = logging.getLogger(__name__)


def decord_available() -> bool:
    """Whether ``import decord`` works (decord2 installs the same module name)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def last_line(err: BaseException) -> str:
    """The last line of an exception's text (decord's messages end with the C++ error), at most 200 characters."""
    lines = str(err).strip().splitlines()
    return lines[-1][:200] if lines else type(err).__name__


class DecordReader(VideoReader):
    """decord ``VideoReader.get_batch``; switches to :class:`PyAVReader` for this file if decord fails on a read."""

    backend = "decord"

    def __init__(self, path: str, short_side: int | None = None, num_threads: int = 1) -> None:
        super().__init__(path, short_side)
        check_file(path)
        import decord

        try:
            self._vr = decord.VideoReader(path, num_threads=num_threads)
            self.frame_count = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as err:  # decord raises its own DECORDError / RuntimeError
            raise VideoDecodeError(f"decord cannot open: {last_line(err).replace(path, '<file>')}", path) from err
        self._fallback: PyAVReader | None = None

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        if self._fallback is None:
            idx = self._clamp(indices)
            try:
                out = from_dlpack(self._vr.get_batch(idx).to_dlpack())  # decord's buffer itself: no copy
                if out.ndim == 4 and out.shape[-1] == 3 and out.shape[0] == len(idx):
                    return resize_frames(out, self.short_side)
                reason = f"unexpected frame shape {tuple(out.shape)}"
            except Exception as err:  # noqa: BLE001 - any decord failure sends this file to PyAV
                reason = last_line(err)
            logger.info("decord failed on %s (%s); reading it with PyAV", self.path, reason)
            self.num_repeated -= self.last_num_repeated
            self._fallback = PyAVReader(self.path, self.short_side)
            self.backend = "pyav"
        out = self._fallback.frames(indices)
        self.frame_count, self.rotation = self._fallback.frame_count, self._fallback.rotation
        self.last_num_repeated = self._fallback.last_num_repeated
        self.num_repeated += self.last_num_repeated
        return out

    def close(self) -> None:
        self._vr = None


__all__ = ["DecordReader", "decord_available"]
