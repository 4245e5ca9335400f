"""Display rotation and announced frame count of MP4/MOV files from the header boxes, without FFmpeg or decoding."""

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


def mp4_video_header(path: str) -> tuple[int, int] | None:
    """(display rotation, sample count) of the first video track of an MP4/MOV file, read from the header only.

    The rotation is in degrees counter-clockwise, like PyAV's ``frame.rotation``, from the ``tkhd`` matrix; the
    sample count (frames the header announces) from ``stsz``, 0 when unknown (fragmented files). None when the file
    cannot be parsed or has no video track.
    """
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
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
                count = 0
                stsz = _find(f, a, b, b"mdia", b"minf", b"stbl", b"stsz")
                if stsz is not None:
                    f.seek(stsz[0] + 8)  # version/flags, sample_size
                    count = struct.unpack(">I", f.read(4))[0]
                return rotation, count
    except (OSError, struct.error, IndexError):
        return None
    return None


def mp4_rotation(path: str) -> int | None:
    """Display rotation (degrees counter-clockwise) of an MP4/MOV file without decoding; None when unparsable."""
    header = mp4_video_header(path)
    return None if header is None else header[0]


__all__ = ["ISO_BMFF_EXTENSIONS", "NO_ROTATION_EXTENSIONS", "mp4_rotation", "mp4_video_header"]
