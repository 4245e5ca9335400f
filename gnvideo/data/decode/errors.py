"""The one definition of a broken video, shared by the readers, the encoder, the datasets and the data tools.

A video is broken when it is missing or empty, cannot be opened, has no decodable frame, a frame fails to decode
(FFmpeg reports an error on a packet), or it decodes to clearly fewer frames than its container announces
(truncated: short by more than ``max(2, 5 %)`` of the announced count; a frame or two less is a rounding of the
count, not damage). A decoder that crashes its process (a segmentation fault, an abort) or hangs makes the file
broken too: the process that ran it is isolated (:mod:`.sandbox`, :mod:`.pool`) and names the file with
:func:`crash_reason` or :func:`hang_reason`. Every tool reports the same reason text, from :class:`VideoDecodeError`'s
``reason``.
"""

from __future__ import annotations

import os
import signal

#: a read shorter than the announced count by at most this many frames (or this fraction) is not damage
TRUNCATION_FRAMES = 2
TRUNCATION_FRACTION = 0.05


class VideoDecodeError(ValueError):
    """A video file exists but cannot be opened or decoded.

    Attributes:
        reason: one line saying what is wrong, without the path (what check_videos writes after the TAB).
        path: the file, or None.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None) -> None:
        self.reason = " ".join(str(reason).split())
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)

    def __reduce__(self):  # picklable across DataLoader workers and process pools
        return type(self), (self.reason, self.path)


def check_file(path: str | os.PathLike) -> None:
    """Raise :class:`FileNotFoundError` (missing) or :class:`VideoDecodeError` (a folder, or 0 bytes) for ``path``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"video file not found: {path}")
    if os.path.isdir(path):
        raise VideoDecodeError("is a directory, not a video file", path)
    if os.path.getsize(path) == 0:
        raise VideoDecodeError("empty file (0 bytes)", path)


def truncation_reason(decoded: int, announced: int) -> str | None:
    """The reason when ``decoded`` frames are clearly fewer than the ``announced`` count, else None.

    Args:
        decoded: frames that decode (or packets present).
        announced: the container's count (0 or less = unknown: never truncated).
    """
    if announced <= 0 or decoded >= announced:
        return None
    if announced - decoded > max(TRUNCATION_FRAMES, TRUNCATION_FRACTION * announced):
        return f"truncated: {decoded} of {announced} frames decodable"
    return None


def ffmpeg_message(err: BaseException) -> str:
    """An FFmpeg error's text without the file name PyAV appends (the path is reported once, beside the reason)."""
    text = getattr(err, "strerror", None) or str(err)
    filename = getattr(err, "filename", None)
    if filename:
        text = text.replace(f": {filename!r}", "").replace(str(filename), "<file>")
    return " ".join(str(text).split())[:300]


def decode_error_reason(frame_index: int, err: BaseException) -> str:
    """The reason for an FFmpeg error on the packet that should give frame ``frame_index``."""
    return f"decode error at frame {frame_index}: {ffmpeg_message(err)}"


_CRASHED, _HUNG = "decoder crashed", "decoder hung"


def crash_reason(exitcode: int | None) -> str:
    """The reason for a file whose decoding process died: ``exitcode`` as ``multiprocessing`` gives it (``-N``:
    killed by signal N), e.g. "decoder crashed: signal 11 (SIGSEGV)"."""
    if exitcode is not None and exitcode < 0:
        try:
            name = f" ({signal.Signals(-exitcode).name})"
        except ValueError:
            name = ""
        return f"{_CRASHED}: signal {-exitcode}{name}"
    return f"{_CRASHED}: exit status {exitcode}" if exitcode is not None else _CRASHED


def hang_reason(seconds: float) -> str:
    """The reason for a file whose decoder gave no frames for ``seconds`` (and was killed)."""
    return f"{_HUNG}: no frames after {seconds:g} s"


def is_decoder_fault(reason: str) -> bool:
    """Whether ``reason`` is a :func:`crash_reason` or :func:`hang_reason` (the decoding process died or was killed),
    not an error the reading code raised."""
    return reason.startswith((_CRASHED, _HUNG))


def problem_reason(err: BaseException) -> str:
    """One-line reason for any failure to read a video (the ``reason`` of a :class:`VideoDecodeError`)."""
    if isinstance(err, VideoDecodeError):
        return err.reason
    if isinstance(err, FileNotFoundError):
        return "file not found"
    return " ".join(f"{type(err).__name__}: {err}".split())[:500]


__all__ = ["VideoDecodeError", "check_file", "crash_reason", "decode_error_reason", "ffmpeg_message", "hang_reason",
           "is_decoder_fault", "problem_reason", "truncation_reason"]
