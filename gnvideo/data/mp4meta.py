"""Display rotation of MP4/MOV files read from the ``tkhd`` box, without FFmpeg and without decoding a frame."""

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


def mp4_rotation(path: str) -> int | None:
    """Display rotation (degrees counter-clockwise, like PyAV's ``frame.rotation``) from the first video track's
    ``tkhd`` matrix of an MP4/MOV file, without decoding; None when the file cannot be parsed."""
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            moov = next(((a, b) for k, a, b in _boxes(f, 0, end) if k == b"moov"), None)
            if moov is None:
                return None
            for kind, a, b in _boxes(f, *moov):
                if kind != b"trak":
                    continue
                for sub, c, _ in _boxes(f, a, b):
                    if sub != b"tkhd":
                        continue
                    f.seek(c)
                    version = f.read(1)[0]
                    f.seek(c + (52 if version == 1 else 40))  # skip version/flags, times, ids, layer, volume
                    matrix = struct.unpack(">9i", f.read(36))
                    width, height = struct.unpack(">II", f.read(8))
                    if width == 0 or height == 0:  # not a visual track
                        break
                    a0, b0 = matrix[0] / 65536.0, matrix[1] / 65536.0
                    if a0 == 0 and b0 == 0:
                        return 0
                    return int(round(-math.degrees(math.atan2(b0, a0)))) % 360
    except (OSError, struct.error, IndexError, StopIteration):
        return None
    return None


__all__ = ["ISO_BMFF_EXTENSIONS", "NO_ROTATION_EXTENSIONS", "mp4_rotation"]
