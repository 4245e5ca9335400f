"""Frame-accurate video readers: decord first, PyAV as the fallback.

``open_video(path)`` returns a :class:`VideoReader` whose ``frames(indices)`` gives uint8 (T, H, W, 3) RGB frames, where
index ``i`` is the i-th frame the decoder puts out (presentation order), which is how decord numbers frames, also for
variable-frame-rate files and for AVI files whose packet timestamps are in decode order. What it copes with:

- rotation metadata (phone videos): applied, so frames come out upright. Files with rotation metadata are read with
  PyAV: decord2 3.4.0 and decord 0.6.0 rotate correctly at most sizes but fail with a size-mismatch error at others
  (64x48 turned by 90 or 270 degrees). ``backend="auto"`` finds the rotation in the MP4/MOV header without decoding;
  for other containers except AVI/MPEG it asks PyAV, which opens the file and decodes one frame (~3 ms).
- a container whose frame count is off by a frame or two: reading stops at the real end and ``num_frames`` shrinks
  to the real count. Indices past the end repeat the last frame (a video shorter than a clip); ``last_num_repeated``
  / ``num_repeated`` count those frames.
- ``short_side``: frames are scaled (aspect kept) so the short side is ``short_side`` pixels. PyAV scales while
  converting each frame (the full-size RGB clip never exists); with decord the batch is scaled right after decoding
  (decord's own ``width``/``height`` option fails with a size-mismatch error for some sizes, e.g. 32x24 and 48x36
  in decord2 3.4.0).
- broken files (the definition is in :mod:`gnvideo.data.validation`): missing -> :class:`FileNotFoundError`; empty,
  undecodable, a decode error on any frame read, or clearly fewer frames than the container announces ->
  :class:`VideoDecodeError`, naming the file and the reason. A broken frame is never replaced by a neighbour.
"""

import logging
import os
from collections.abc import Sequence

import torch

from .mp4meta import ISO_BMFF_EXTENSIONS, NO_ROTATION_EXTENSIONS, mp4_video_header
from .pyav_reader import PyAVReader, _pyav_header, _pyav_probe  # noqa: F401 - _pyav_probe: tests patch it there
from .validation import VideoDecodeError
from .validation import check_file as _check_file
from .video_reader import VideoReader, _check_count, _resize, scaled_size  # noqa: F401 - scaled_size: public here

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")


def decord_available() -> bool:
    """Whether ``import decord`` works (decord2 installs the same module name)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


class DecordReader(VideoReader):
    """decord ``VideoReader.get_batch``; switches to :class:`PyAVReader` for this file if decord fails on a read."""

    backend = "decord"

    def __init__(self, path: str, short_side: int | None = None, num_threads: int = 1) -> None:
        super().__init__(path, short_side)
        _check_file(path)
        import decord

        try:
            self._vr = decord.VideoReader(path, num_threads=num_threads)
            self.num_frames = len(self._vr)
            self.fps = float(self._vr.get_avg_fps())
        except Exception as err:  # decord raises its own DECORDError / RuntimeError
            raise VideoDecodeError(f"decord cannot open: {_last_line(err).replace(path, '<file>')}", path) from err
        self._fallback: PyAVReader | None = None

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        if self._fallback is None:
            idx = self._clamp(indices)
            try:
                out = torch.from_numpy(self._vr.get_batch(idx).asnumpy())
                if out.ndim == 4 and out.shape[-1] == 3 and out.shape[0] == len(idx):
                    return _resize(out, self.short_side)
                reason = f"unexpected frame shape {tuple(out.shape)}"
            except Exception as err:  # noqa: BLE001 - any decord failure sends this file to PyAV
                reason = _last_line(err)
            logger.info("decord failed on %s (%s); reading it with PyAV", self.path, reason)
            self.num_repeated -= self.last_num_repeated
            self._fallback = PyAVReader(self.path, self.short_side)
            self.backend = "pyav"
        out = self._fallback.frames(indices)
        self.num_frames, self.rotation = self._fallback.num_frames, self._fallback.rotation
        self.last_num_repeated = self._fallback.last_num_repeated
        self.num_repeated += self.last_num_repeated
        return out

    def close(self) -> None:
        self._vr = None


def _last_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1][:200] if lines else type(err).__name__


def open_video(path: str | os.PathLike, backend: str = "auto", short_side: int | None = None) -> VideoReader:
    """Open a video for frame-accurate reading.

    Args:
        path: video file (mp4/webm/mkv/avi ... anything FFmpeg reads).
        backend: "auto" (decord if installed, else PyAV; PyAV for files with rotation metadata and for AVI files
            with B-frames, where decord's random access returns neighbouring frames; decord failures fall back to
            PyAV), "decord" or "pyav".
        short_side: if set, frames are scaled so their short side has this many pixels.

    Returns:
        a :class:`VideoReader` (``num_frames``, ``fps``, ``duration`` in s, ``frames(indices)``).

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: a broken video (:mod:`gnvideo.data.validation`); the message names the file and reason.
        ValueError: unknown backend.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r} (for {path})")
    if short_side is not None and short_side <= 0:
        raise ValueError(f"short_side must be a positive number of pixels, got {short_side} (for {path})")
    _check_file(path)
    if backend == "pyav" or (backend == "auto" and not decord_available()):
        return PyAVReader(path, short_side)
    probe, rotation, announced = None, None, None
    ext = os.path.splitext(path)[1].lower()
    if ext in ISO_BMFF_EXTENSIONS:
        header = mp4_video_header(path)  # reads the header only (~0.1 ms)
        if header is not None:
            rotation, announced = header
    elif ext in NO_ROTATION_EXTENSIONS:
        rotation = 0
        if ext == ".avi":  # AVI stores no presentation times: decord's seeks give neighbouring frames with B-frames
            announced, reorders = _pyav_header(path)
            if reorders and backend == "auto":
                return PyAVReader(path, short_side)
    if backend == "auto" and rotation is None:  # other containers: ask FFmpeg (opens the file, decodes one frame)
        probe = _pyav_probe(path)
        rotation, announced = probe[2], probe[3]
    if backend == "auto" and rotation != 0:
        return PyAVReader(path, short_side, probe=probe)
    try:
        reader: VideoReader = DecordReader(path, short_side)
    except VideoDecodeError as err:
        if backend == "decord":
            raise
        logger.info("%s; trying PyAV", err)
        return PyAVReader(path, short_side, probe=probe)
    if announced is None:
        announced = _pyav_header(path)[0]
    _check_count(reader, reader.num_frames, announced)  # decord counts only the packets present in a cut file
    return reader


__all__ = ["BACKENDS", "DecordReader", "PyAVReader", "VideoDecodeError", "VideoReader", "open_video"]
