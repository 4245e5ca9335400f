"""One video writer (PyAV) for everything gnvideo encodes: the synthetic dataset, ``data_prep/prepare_kinetics.py``
and the test fixtures.

Frames go in as uint8 RGB, (T, H, W, 3) or one (H, W, 3) frame, numpy or torch (CPU), or as ``av.VideoFrame`` objects;
:func:`write_video` also takes an iterable of such chunks, so a long video streams through without being held in
memory. The container follows the file extension (mp4, m4v, mkv, webm, avi, mov). The file is written to a hidden temp
file next to the destination (``.<name>.partial``) and renamed when complete; on an error the temp file is removed and
the destination is left as it was.

``deterministic=True`` makes the bytes a function of the frames alone: single-threaded encoding, x264's
macroblock-tree, adaptive quantisation and psy tuning off (they were seen to give different bitstreams for identical
input in different processes), and the RGB -> yuv420p conversion done in numpy (swscale's is not bit-reproducible).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mov": "mov"}
DETERMINISTIC_X264 = {"mbtree": "0", "aq-mode": "0", "psy": "0"}


def partial_path(path: str | os.PathLike) -> Path:
    """The hidden temp file a video is written to before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(f".{path.name}.partial")


def rgb_to_yuv420p(frames: np.ndarray) -> np.ndarray:
    """BT.601 limited-range conversion of uint8 RGB (T, H, W, 3), H and W even, to planar yuv420p (T, 3H/2, W).

    Done in numpy because PyAV's swscale conversion is not bit-reproducible from run to run.
    """
    t, h, w, _ = frames.shape
    x = frames.astype(np.float32)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    chroma = [128 - 0.148 * r - 0.291 * g + 0.439 * b, 128 + 0.439 * r - 0.368 * g - 0.071 * b]
    planes = [y.reshape(t, -1)] + [c.reshape(t, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).reshape(t, -1) for c in chroma]
    out = np.clip(np.concatenate(planes, axis=1) + 0.5, 0, 255).astype(np.uint8)
    return out.reshape(t, h * 3 // 2, w)


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only once torch is imported: no torch import here
    return torch is not None and isinstance(x, torch.Tensor)


def _as_rgb_array(frames) -> np.ndarray:
    """uint8 (T, H, W, 3) numpy view of a numpy array or CPU tensor, (T, H, W, 3) or (H, W, 3)."""
    array = frames.numpy() if _is_tensor(frames) else np.asarray(frames)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) or (H, W, 3), got {array.dtype} {tuple(array.shape)}")
    return array


class VideoWriter:
    """Encode frames into ``path``; use as a context manager (the file appears, complete, when the block ends).

    Args:
        path: destination; its extension picks the container (:data:`CONTAINERS`).
        fps: frame rate in frames per second (int or Fraction, e.g. Fraction(30000, 1001)); frame ``i`` is shown at
            ``i / fps`` s unless :meth:`write` is given explicit ``pts``.
        width, height: frame size in pixels (even for yuv420p); None: taken from the first frame written.
        codec: encoder name ("libx264", "mpeg4", "libvpx-vp9", ...).
        crf, preset: x264 quality (lower = better) and speed preset; used with libx264 only.
        pix_fmt: encoded pixel format.
        x264_params: extra x264 settings, e.g. ``{"bframes": 3, "keyint": 12}``.
        options: other encoder options (e.g. mpeg4 ``{"bf": "2", "g": "12"}``).
        threads: encoder threads (None: the encoder's default; deterministic mode uses 1).
        rotation: display rotation metadata in degrees counter-clockwise (the pixels are stored as given).
        time_base: stream time base in seconds (default 1 / fps); set it to give explicit ``pts`` in other units.
        container_options: muxer options, e.g. ``{"movflags": "+faststart"}``.
        deterministic: bit-reproducible output (see the module docstring); RGB input only.
    """

    def __init__(self, path: str | os.PathLike, fps: int | Fraction, width: int | None = None,
                 height: int | None = None, codec: str = "libx264", crf: int | None = 23, preset: str = "veryfast",
                 pix_fmt: str = "yuv420p", x264_params: Mapping[str, object] | None = None,
                 options: Mapping[str, str] | None = None, threads: int | None = None, rotation: int | None = None,
                 time_base: Fraction | None = None, container_options: Mapping[str, str] | None = None,
                 deterministic: bool = False) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in CONTAINERS:
            raise ValueError(f"{self.path}: no container for {suffix!r}; use one of {sorted(CONTAINERS)}")
        if deterministic and (codec != "libx264" or pix_fmt != "yuv420p"):
            raise ValueError("deterministic encoding is implemented for libx264 / yuv420p only")
        self.fps = Fraction(fps)
        self.time_base = Fraction(time_base) if time_base is not None else 1 / self.fps
        self.deterministic = deterministic
        self.frames_written = 0
        codec_options = dict(options or {})
        if codec == "libx264":
            if crf is not None:
                codec_options["crf"] = str(crf)
            codec_options["preset"] = preset
            params = {**(DETERMINISTIC_X264 if deterministic else {}), **(x264_params or {})}
            if params:
                codec_options["x264-params"] = ":".join(f"{k}={v}" for k, v in params.items())
        if deterministic:
            threads = 1
        if threads is not None:
            codec_options["threads"] = str(threads)
        self._settings = (codec, codec_options, pix_fmt, rotation)
        self._tmp = partial_path(self.path)
        self._container = av.open(str(self._tmp), "w", format=CONTAINERS[suffix], options=dict(container_options or {}))
        self._stream = None
        if width and height:
            self._open_stream(width, height)

    def _open_stream(self, width: int, height: int) -> None:
        codec, codec_options, pix_fmt, rotation = self._settings
        stream = self._container.add_stream(codec, rate=self.fps, options=codec_options)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = self.time_base
        if rotation:
            stream.set_display_rotation(rotation)
        self._stream = stream

    @property
    def size(self) -> tuple[int, int] | None:
        """(width, height) of the encoded frames, once known."""
        return None if self._stream is None else (self._stream.width, self._stream.height)

    def write(self, frames, pts: Iterable[int] | None = None) -> None:
        """Encode frames: uint8 RGB (T, H, W, 3) / (H, W, 3) numpy or tensor, or one ``av.VideoFrame``.

        Args:
            pts: presentation time of each frame in units of ``time_base`` (default: the running frame count, so
                frame i is at i / fps s).
        """
        if isinstance(frames, av.VideoFrame):
            video_frames = [frames]
        else:
            rgb = _as_rgb_array(frames)
            if self.deterministic:
                video_frames = [av.VideoFrame.from_ndarray(yuv, format="yuv420p") for yuv in rgb_to_yuv420p(rgb)]
            else:
                video_frames = [av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24") for f in rgb]
        if self._stream is None:
            self._open_stream(video_frames[0].width, video_frames[0].height)
        times = iter(pts) if pts is not None else None
        for frame in video_frames:
            frame.pts = next(times) if times is not None else self.frames_written
            frame.time_base = self.time_base
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and rename the temp file to ``path``.

        Raises:
            ValueError: no frame was written (nothing is left on disk).
        """
        if self._stream is None:
            self.abort()
            raise ValueError(f"{self.path}: no frames written")
        self._container.mux(self._stream.encode(None))
        self._container.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Close without keeping anything: the temp file is removed and ``path`` left as it was."""
        try:
            self._container.close()
        except (av.error.FFmpegError, ValueError, OSError):
            pass  # an encoder that failed mid-file may not close cleanly; the file is discarded either way
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames, fps: int | Fraction, **options) -> int:
    """Write uint8 RGB frames to ``path`` (atomically) and return how many were written.

    Args:
        path: destination; the extension picks the container.
        frames: (T, H, W, 3) numpy array or tensor, or an iterable of such chunks (or of (H, W, 3) frames), so long
            videos can be streamed.
        fps: frames per second (int or Fraction).
        **options: :class:`VideoWriter` options (codec, crf, preset, pix_fmt, x264_params, options, threads, rotation,
            container_options, deterministic, ...).
    """
    chunks = [frames] if isinstance(frames, np.ndarray) or _is_tensor(frames) else frames
    with VideoWriter(path, fps, **options) as writer:
        for chunk in chunks:
            writer.write(chunk)
    return writer.frames_written


__all__ = ["CONTAINERS", "DETERMINISTIC_X264", "VideoWriter", "partial_path", "rgb_to_yuv420p", "write_video"]
