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

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from .mp4meta import ISO_BMFF_EXTENSIONS, NO_ROTATION_EXTENSIONS, mp4_video_header
from .validation import VideoDecodeError, decode_error_reason, ffmpeg_message, truncation_reason
from .validation import check_file as _check_file

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")


def decord_available() -> bool:
    """Whether ``import decord`` works (decord2 installs the same module name)."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after scaling so the short side is ``short_side`` (unchanged for None); even-rounded."""
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


class VideoReader:
    """Common interface; use :func:`open_video` to get one.

    Attributes:
        path: the file.
        backend: "decord" or "pyav" (the one actually used; "pyav" after a decord failure).
        num_frames: decodable frames (the container's count until a read proves it wrong).
        fps: average frames per second.
        rotation: display rotation applied, degrees counter-clockwise (0, 90, 180 or 270).
        num_repeated: total frames returned as repeats of the last frame because an index was past the end.
        last_num_repeated: the same for the latest ``frames`` call only.
    """

    backend = "none"

    def __init__(self, path: str, short_side: int | None = None) -> None:
        self.path = path
        self.short_side = short_side
        self.num_frames = 0
        self.fps = 0.0
        self.rotation = 0
        self.num_repeated = 0
        self.last_num_repeated = 0

    @property
    def duration(self) -> float:
        """Length in seconds (num_frames / fps)."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0

    def _clamp(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if any(i < 0 for i in idx):
            raise ValueError(f"negative frame index in {idx} for {self.path}")
        if self.num_frames <= 0:
            raise VideoDecodeError("no decodable frames", self.path)
        last = self.num_frames - 1
        self.last_num_repeated = sum(i > last for i in idx)
        self.num_repeated += self.last_num_repeated
        return [min(i, last) for i in idx]

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode the given frame indices.

        Args:
            indices: frame numbers (any order, repeats allowed); indices past the end give the last frame.

        Returns:
            uint8 tensor (T, H, W, 3), RGB, T = len(indices), upright, short side scaled if requested.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, num_frames={self.num_frames}, fps={self.fps:.3f}, "
                f"rotation={self.rotation})")


def _rotate(frames: torch.Tensor, rotation: int) -> torch.Tensor:
    """Rotate (T, H, W, 3) counter-clockwise by ``rotation`` degrees (rounded to a multiple of 90)."""
    k = round(rotation / 90) % 4
    return torch.rot90(frames, k, dims=(1, 2)).contiguous() if k else frames


def _resize(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """Scale uint8 (T, H, W, 3) so the short side is ``short_side`` (bilinear, antialiased)."""
    if short_side is None:
        return frames
    h, w = frames.shape[1:3]
    size = scaled_size(h, w, short_side)
    if size == (h, w):
        return frames
    from torchvision.transforms.v2 import functional as F

    out = F.resize(frames.permute(0, 3, 1, 2), list(size), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()


class _MidStreamError(Exception):
    """FFmpeg failed on a packet after ``produced`` frames had come out of the decoder."""

    def __init__(self, err: Exception, produced: int) -> None:
        super().__init__(str(err))
        self.err, self.produced = err, produced


def _iter_frames(container, stream, path: str):
    """Decoded frames in output order. An error before the first frame raises :class:`VideoDecodeError`; one after
    it raises :class:`_MidStreamError` (the caller knows which frame that is). The demuxer's end ends the stream."""
    import av

    produced = 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            if not produced:
                raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", path) from err
            raise _MidStreamError(err, produced) from err
        for frame in frames:
            produced += 1
            yield frame


def _pyav_probe(path: str) -> tuple[int, float, int]:
    """(announced frame count, fps, rotation) from the container; decodes the first frame for the rotation."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream", path)
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            fps = float(rate) if rate else 0.0
            count = _announced_count(container, stream, fps)
            if count <= 0:  # no count or duration in the container: count the packets
                count = sum(1 for packet in container.demux(stream) if packet.size)
                container.seek(0)
            rotation = 0
            try:
                for frame in _iter_frames(container, stream, path):
                    rotation = int(round(frame.rotation or 0))
                    break
                else:
                    raise VideoDecodeError("no decodable frames", path)
            except _MidStreamError:  # not reached: the first frame came out
                pass
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"cannot open: {ffmpeg_message(err)}", path) from err
    return count, fps, rotation % 360


def _announced_count(container, stream, fps: float) -> int:
    """Frames the container announces (its count, else duration x rate; 0 when unknown)."""
    count = int(stream.frames or 0)
    if count <= 0 and stream.duration and stream.time_base and fps:
        count = int(round(float(stream.duration * stream.time_base) * fps))
    if count <= 0 and container.duration and fps:
        count = int(round(container.duration / 1e6 * fps))
    return count


def _pyav_header(path: str) -> tuple[int, bool]:
    """(announced frame count, whether the codec reorders frames) from the container header, without decoding;
    (0, False) when unknown or unreadable."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            count = _announced_count(container, stream, float(rate) if rate else 0.0)
            return count, bool(stream.codec_context.has_b_frames)
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError):
        return 0, False


def _check_count(reader: VideoReader, decoded: int, announced: int) -> None:
    """Raise when ``decoded`` frames are clearly fewer than announced (the rule of :mod:`.validation`)."""
    reason = truncation_reason(decoded, announced)
    if reason is not None:
        raise VideoDecodeError(reason, reader.path)


class PyAVReader(VideoReader):
    """PyAV decoding with exact frame numbers for every codec/container, including VFR and wrong counts.

    Fast path: the packets' presentation times (read without decoding) give frame i's timestamp; decoding starts at
    the keyframe one GOP before the first wanted frame (so open-GOP leading frames decode too) and frames are picked
    by timestamp. When timestamps are missing or duplicated, or the decoded frames' timestamps are not increasing
    (h264 in AVI stores decode-order times), or a wanted frame does not come out, the reader decodes from the start
    and counts frames, which is always exact; a file whose timestamps failed once is always read that way.
    """

    backend = "pyav"

    def __init__(self, path: str, short_side: int | None = None, probe: tuple[int, float, int] | None = None) -> None:
        super().__init__(path, short_side)
        _check_file(path)
        self.num_frames, self.fps, self.rotation = probe or _pyav_probe(path)
        self.announced = self.num_frames
        self._count_known = False
        self._timestamps_usable = True

    def _to_array(self, frame) -> np.ndarray:
        kwargs = {"format": "rgb24"}
        if self.short_side is not None:  # size of the stored (unrotated) frame; a 90-degree turn keeps the short side
            kwargs["height"], kwargs["width"] = scaled_size(frame.height, frame.width, self.short_side)
        return frame.to_ndarray(**kwargs)

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        wanted = [int(i) for i in indices]
        if any(i < 0 for i in wanted):
            raise ValueError(f"negative frame index in {wanted} for {self.path}")
        if wanted and self._timestamps_usable:
            out = self._frames_by_seeking(wanted)
            if out is not None:
                return out
        return self._frames_sequential(wanted)

    def _frames_by_seeking(self, wanted: list[int]) -> torch.Tensor | None:
        import av

        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                start = stream.start_time
                pts, keys = [], []
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard:
                        continue
                    if packet.pts is None:
                        self._timestamps_usable = False
                        return None
                    if start is not None and packet.pts < start:
                        continue
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
                pts.sort()
                keys.sort()
                if not pts or not keys or len(set(pts)) != len(pts) or keys[0] != pts[0]:
                    self._timestamps_usable = False
                    return None
                _check_count(self, len(pts), self.announced)
                end = len(pts) - 1
                clamped = [min(i, end) for i in wanted]
                first, last = pts[min(clamped)], pts[max(clamped)]
                k = max(bisect.bisect_right(keys, first) - 2, 0)  # one keyframe before the one holding `first`
                index_of = {pts[i]: i for i in set(clamped)}
                got: dict[int, np.ndarray] = {}
                container.seek(keys[k], stream=stream, backward=True, any_frame=False)
                previous = None
                try:
                    for frame in _iter_frames(container, stream, self.path):
                        if frame.pts is None or (previous is not None and frame.pts <= previous):
                            self._timestamps_usable = False  # decode-order timestamps: count frames instead
                            return None
                        previous = frame.pts
                        if frame.pts in index_of:
                            got[index_of[frame.pts]] = self._to_array(frame)
                        if frame.pts >= last and len(got) == len(index_of):
                            break
                except _MidStreamError as err:
                    failed = bisect.bisect_right(pts, previous) if previous is not None else 0
                    raise VideoDecodeError(decode_error_reason(failed, err.err), self.path) from err.err
        except av.error.FFmpegError:
            return None
        except VideoDecodeError as err:
            if err.reason.startswith("cannot decode"):  # nothing came out after the seek: try from the start
                return None
            raise
        if len(got) != len(index_of):
            return None
        self.num_frames = len(pts)
        self._clamp(wanted)
        return _rotate(torch.from_numpy(np.stack([got[i] for i in clamped])), self.rotation)

    def _frames_sequential(self, wanted: list[int]) -> torch.Tensor:
        import av

        target = max(wanted)
        if self._count_known:
            target = min(target, self.num_frames - 1)
        needed = set(wanted)
        got: dict[int, np.ndarray] = {}
        last_frame, count = None, 0
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in _iter_frames(container, stream, self.path):
                    if count in needed:
                        got[count] = self._to_array(frame)
                    last_frame = frame
                    count += 1
                    if count > target:
                        break
        except _MidStreamError as err:
            raise VideoDecodeError(decode_error_reason(err.produced, err.err), self.path) from err.err
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", self.path) from err
        if count == 0:
            raise VideoDecodeError("no decodable frames", self.path)
        if count <= target:  # the stream ended before the requested index: now the real count is known
            _check_count(self, count, self.announced)
            self.num_frames, self._count_known = count, True
        elif count > self.num_frames:
            self.num_frames = count
        end = count - 1
        if end not in got:
            got[end] = self._to_array(last_frame)
        self._clamp(wanted)
        out = torch.from_numpy(np.stack([got[min(i, end)] for i in wanted]))
        return _rotate(out, self.rotation)


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
        rotation, announced = probe[2], probe[0]
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
