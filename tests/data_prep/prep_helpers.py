"""Helpers for the data_prep tests: raw videos whose frames carry their index."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from gnvideo.data.decode.writer import write_video

BITS = 8


def index_frame(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 frame showing ``index`` as 8 vertical bands (bit 0 on the left, light = set)."""
    frame = np.full((height, width, 3), 20, dtype=np.uint8)
    for bit in range(BITS):
        if (index >> bit) & 1:
            frame[:, bit * width // BITS : (bit + 1) * width // BITS] = 235
    return frame


def frame_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` for a frame of any size."""
    gray = frame.astype(np.float32).mean(-1)
    w = gray.shape[1]
    bands = [gray[:, int((b + 0.3) * w / BITS) : int((b + 0.7) * w / BITS)].mean() for b in range(BITS)]
    return sum(1 << b for b, level in enumerate(bands) if level > 128)


def write_raw(path: Path, num_frames: int, width: int = 160, height: int = 120, fps: int = 25,
              faststart: bool = False, codec: str = "libx264", bframes: int = 0, rotation: int | None = None) -> Path:
    """Video (any container PyAV infers from the suffix) whose frame i shows i; ``faststart``: index first.

    Args:
        codec: "libx264" or "mpeg4".
        bframes: B-frames between references (0 = none); with h264 in AVI the packet times are then in decode order.
        rotation: display rotation metadata, degrees counter-clockwise (the pixels stay as drawn).
    """
    x264_params = {"bframes": bframes, "b-adapt": 0, "keyint": 15, "min-keyint": 15, "scenecut": 0} if bframes else None
    options = {"bf": str(bframes), "g": "15"} if codec == "mpeg4" and bframes else None
    write_video(path, (index_frame(i, width, height) for i in range(num_frames)), fps, codec=codec,
                preset="ultrafast" if not bframes else "veryfast", x264_params=x264_params, options=options,
                threads=1, rotation=rotation, container_options={"movflags": "+faststart"} if faststart else None)
    return path


def decode_all(path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)]), float(stream.average_rate)
