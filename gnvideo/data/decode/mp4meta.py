"""Display rotation, announced frame count and keyframes of MP4/MOV files from the header boxes, without FFmpeg or
decoding."""

from __future__ import annotations

import math
import os
import struct

ISO_BMFF_EXTENSIONS = (".mp4", ".m4v", ".mov", ".3gp", ".3g2")
NO_ROTATION_EXTENSIONS = (".avi", ".mpg", ".mpeg", ".flv")


def _boxes(f, start: int, end: int):
    """(type, payload offset, payload end) of the ISO-BMFF boxes in [start, end)."""
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        header = f.read(8)
        if len(header) < 8:
            return
        size, kind = struct.unpack(">I4s", header)
        offset = 8
        if size == 1:
            size, offset = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < offset:
            return
        yield kind, pos + offset, min(pos + size, end)
        pos += size


def _find(f, start: int, end: int, *path: bytes) -> tuple[int, int] | None:
    """Payload span of the box at ``path`` (e.g. b"mdia", b"minf") inside [start, end)."""
    for kind, a, b in _boxes(f, start, end):
        if kind == path[0]:
            return (a, b) if len(path) == 1 else _find(f, a, b, *path[1:])
    return None


def _video_track(f, end: int) -> tuple[int, int, int] | None:
    """(payload start, payload end, display rotation) of the first video ``trak`` of an open file of ``end`` bytes."""
    moov = _find(f, 0, end, b"moov")
    if moov is None:
        return None
    for kind, a, b in _boxes(f, *moov):
        if kind != b"trak":
            continue
        hdlr = _find(f, a, b, b"mdia", b"hdlr")
        if hdlr is not None:
            f.seek(hdlr[0] + 8)  # version/flags, pre_defined
            if f.read(4) != b"vide":
                continue
        tkhd = _find(f, a, b, b"tkhd")
        if tkhd is None:
            continue
        f.seek(tkhd[0])
        version = f.read(1)[0]
        f.seek(tkhd[0] + (52 if version == 1 else 40))  # skip version/flags, times, ids, layer, volume
        matrix = struct.unpack(">9i", f.read(36))
        width, height = struct.unpack(">II", f.read(8))
        if hdlr is None and (width == 0 or height == 0):  # not a visual track
            continue
        a0, b0 = matrix[0] / 65536.0, matrix[1] / 65536.0
        rotation = 0 if a0 == 0 and b0 == 0 else int(round(-math.degrees(math.atan2(b0, a0)))) % 360
        return a, b, rotation
    return None


def _sample_count(f, trak: tuple[int, int, int]) -> int:
    """Samples (frames) of a track from its ``stsz`` box; 0 when unknown (fragmented files)."""
    stsz = _find(f, trak[0], trak[1], b"mdia", b"minf", b"stbl", b"stsz")
    if stsz is None:
        return 0
    f.seek(stsz[0] + 8)  # version/flags, sample_size
    return struct.unpack(">I", f.read(4))[0]


def mp4_video_header(path: str) -> tuple[int, int] | None:
    """(display rotation, sample count) of the first video track of an MP4/MOV file, read from the header only.

    The rotation is in degrees counter-clockwise, like PyAV's ``frame.rotation``, from the ``tkhd`` matrix; the
    sample count (frames the header announces) from ``stsz``, 0 when unknown (fragmented files). None when the file
    cannot be parsed or has no video track.
    """
    try:
        with open(path, "rb") as f:
            trak = _video_track(f, f.seek(0, os.SEEK_END))
            return None if trak is None else (trak[2], _sample_count(f, trak))
    except (OSError, struct.error, IndexError):
        return None


def mp4_sync_samples(path: str) -> tuple[int, list[int]] | None:
    """(sample count, keyframe sample numbers) of the first video track of an MP4/MOV file, from the header only.

    Keyframes are the ``stss`` sync samples, numbered from 0 in decode order (for closed-GOP h264, x264's default,
    an IDR frame's decode position is also its display position); a track without ``stss`` has only keyframes.
    None when the file cannot be parsed, has no video track or announces no samples (fragmented files).
    """
    try:
        with open(path, "rb") as f:
            trak = _video_track(f, f.seek(0, os.SEEK_END))
            if trak is None:
                return None
            count = _sample_count(f, trak)
            if count <= 0:
                return None
            stss = _find(f, trak[0], trak[1], b"mdia", b"minf", b"stbl", b"stss")
            if stss is None:
                return count, list(range(count))
            f.seek(stss[0] + 4)  # version/flags
            (entries,) = struct.unpack(">I", f.read(4))
            if entries > count or stss[0] + 8 + 4 * entries > stss[1]:
                return None
            numbers = struct.unpack(f">{entries}I", f.read(4 * entries))
            return count, [n - 1 for n in numbers if 1 <= n <= count]
    except (OSError, struct.error, IndexError):
        return None


def mp4_media_start(path: str, size: int = 65536) -> bytes:
    """The first ``size`` bytes of the ``mdat`` box of an MP4/MOV file (where the first frame's data, with an
    encoder's settings message, usually is); empty when there is none."""
    try:
        with open(path, "rb") as f:
            for kind, a, b in _boxes(f, 0, f.seek(0, os.SEEK_END)):
                if kind == b"mdat":
                    f.seek(a)
                    return f.read(min(size, b - a))
    except (OSError, struct.error):
        pass
    return b""


def mp4_rotation(path: str) -> int | None:
    """Display rotation (degrees counter-clockwise) of an MP4/MOV file without decoding; None when unparsable."""
    header = mp4_video_header(path)
    return None if header is None else header[0]


__all__ = ["ISO_BMFF_EXTENSIONS", "NO_ROTATION_EXTENSIONS", "mp4_media_start", "mp4_rotation", "mp4_sync_samples",
           "mp4_video_header"]
