"""``open_video``, the decode layer's entry point: picks the reader for each file (decord first, PyAV for what decord
gets wrong) and checks the frame count the container announces."""


import logging
import os

from . import decord_reader
from .base import VideoReader, check_count
from .decord_reader import DecordReader
from .errors import VideoDecodeError, check_file
from .keyframes import parse_x264_settings
from .mp4meta import ISO_BMFF_EXTENSIONS, NO_ROTATION_EXTENSIONS, mp4_media_start, mp4_video_header
from .pyav_reader import PyAVReader, pyav_header, pyav_probe

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")


def import_decoders() -> None:
    """Import decord and PyAV now: called before forking decode children and tool workers, so that no child spends
    its first job's hang limit on imports (seconds on a loaded machine)."""
    decord_reader.decord_available()
    try:
        import av  # noqa: F401
    except ImportError:
        pass


def open_video(path: str | os.PathLike, backend: str = "auto", short_side: int | None = None) -> VideoReader:
    """Open a video for frame-accurate reading.

    Args:
        path: video file (mp4/webm/mkv/avi ... anything FFmpeg reads).
        backend: "auto" (decord if installed, else PyAV; PyAV for files with rotation metadata, for AVI files
            with B-frames, where decord's random access returns neighbouring frames, and for MP4/MOV files that x264
            wrote with open GOPs, where decord numbers frames wrongly after the first GOP; decord failures fall back
            to PyAV), "decord" or "pyav".
        short_side: if set, frames are scaled so their short side has this many pixels.

    Returns:
        a :class:`VideoReader` (``frame_count``, ``fps``, ``duration`` in s, ``frames(indices)``).

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodeError: a broken video (:mod:`gnvideo.data.decode.errors`); the message names the file and reason.
        ValueError: unknown backend.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r} (for {path})")
    if short_side is not None and short_side <= 0:
        raise ValueError(f"short_side must be a positive number of pixels, got {short_side} (for {path})")
    check_file(path)
    if backend == "pyav" or (backend == "auto" and not decord_reader.decord_available()):
        return PyAVReader(path, short_side)
    probe, rotation, announced = None, None, None
    ext = os.path.splitext(path)[1].lower()
    if ext in ISO_BMFF_EXTENSIONS:
        header = mp4_video_header(path)  # reads the header only (~0.1 ms)
        if header is not None:
            rotation, announced = header
        if backend == "auto" and parse_x264_settings(mp4_media_start(path)).get("open_gop", "0") != "0":
            # decord numbers frames wrongly after the first GOP of an open-GOP file (24 read as 27); PyAV is exact
            return PyAVReader(path, short_side)
    elif ext in NO_ROTATION_EXTENSIONS:
        rotation = 0
        if ext == ".avi":  # AVI stores no presentation times: decord's seeks give neighbouring frames with B-frames
            announced, reorders = pyav_header(path)
            if reorders and backend == "auto":
                return PyAVReader(path, short_side)
    if backend == "auto" and rotation is None:  # other containers: ask FFmpeg (opens the file, decodes one frame)
        probe = pyav_probe(path)
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
        announced = pyav_header(path)[0]
    check_count(reader, reader.frame_count, announced)  # decord counts only the packets present in a cut file
    return reader


__all__ = ["BACKENDS", "import_decoders", "open_video"]
