"""decord reading (decord2, ``import decord``): fast random access for files whose packet times are presentation
times; a file decord fails on mid-read switches to PyAV for good."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.utils.dlpack import from_dlpack

from .base import T, VideoReader, resize_frames, shares_memory
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


_FAILED = object()


def _copy(frames: torch.Tensor) -> torch.Tensor:
    """A copy made by numpy: torch's own copy may start its thread pool, which hangs in a process forked from one that
    used it (check_videos' workers are such processes)."""
    return torch.from_numpy(frames.numpy().copy())


def _through(holder: list[torch.Tensor], short_side: int | None, fn):
    """``fn`` of decord's frames (the one tensor in ``holder``, taken out so that no caller's frame keeps it),
    resized to ``short_side``; neither the result nor a traceback ever holds decord's buffer."""
    view = holder.pop()
    frames = resize_frames(view, short_side)
    if frames is not view:  # resized: torch's own memory
        del view
        return fn(frames)
    del frames
    try:
        result = fn(view)
    except Exception:  # noqa: BLE001 - raised again below, from a copy, so its traceback holds no decord memory
        result = _FAILED
    if result is not _FAILED and not shares_memory(result, view):
        return result
    copy = _copy(view)
    del view
    return fn(copy)


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
        return self._read(indices, None)

    def frames_through(self, indices: Sequence[int], fn: Callable[[torch.Tensor], T], close: bool = False) -> T:
        """``fn`` gets decord's own output buffer, uncopied (``frames`` copies it once): a crop of it then costs one
        copy of the crop instead of a copy of every full frame first. The buffer never outlives this call (decord
        memory freed in a forked DataLoader worker crashed it): when ``fn`` fails, or returns something that shares
        the buffer, it runs again on a copy, so neither its result nor a traceback keeps the buffer. ``close``: see
        :meth:`VideoReader.frames_through`."""
        try:
            return self._read(indices, fn)
        finally:
            if close:
                self.close()

    def _read(self, indices: Sequence[int], fn):
        """The frames, copied (``fn`` None), or ``fn`` of decord's buffer (:meth:`frames_through`)."""
        if self._fallback is None:
            idx = self._clamp(indices)
            holder: list[torch.Tensor] = []
            try:
                batch = self._vr.get_batch(idx)
                # under decord's torch bridge (importing pytorchvideo.data sets it process-wide) a tensor already
                bridged = isinstance(batch, torch.Tensor)
                if fn is None:  # a copy, as frames always made it (numpy's: no torch thread pool)
                    holder.append(_copy(batch) if bridged else torch.from_numpy(batch.asnumpy()))
                else:
                    holder.append(batch if bridged else from_dlpack(batch.to_dlpack()))
                del batch
                shape = tuple(holder[0].shape)
                reason = None if len(shape) == 4 and shape[-1] == 3 and shape[0] == len(idx) else \
                    f"unexpected frame shape {shape}"
            except Exception as err:  # noqa: BLE001 - any decord failure sends this file to PyAV
                reason = last_line(err)
            if reason is None and fn is None:
                return resize_frames(holder.pop(), self.short_side)
            if reason is None:  # fn runs outside the try: its errors are not decord's
                return _through(holder, self.short_side, fn)
            holder.clear()
            logger.info("decord failed on %s (%s); reading it with PyAV", self.path, reason)
            self.num_repeated -= self.last_num_repeated
            self._fallback = PyAVReader(self.path, self.short_side)
            self.backend = "pyav"
        out = self._fallback.frames(indices)
        self.frame_count, self.rotation = self._fallback.frame_count, self._fallback.rotation
        self.last_num_repeated = self._fallback.last_num_repeated
        self.num_repeated += self.last_num_repeated
        return out if fn is None else fn(out)

    def close(self) -> None:
        self._vr = None


__all__ = ["DecordReader", "decord_available"]
