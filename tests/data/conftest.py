"""Fixtures for the data tests: tiny videos whose frame index is drawn into the pixels.

Each frame carries its index as 8 bits, one vertical band per bit (band ``b`` is light when bit ``b`` is set), so the
index survives lossy compression, scaling and a 90-degree rotation is detectable (the bands become horizontal).
"""

from __future__ import annotations

import os
import signal
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from gnvideo.data.decode import backends
from gnvideo.data.decode import sandbox as sandbox_module
from gnvideo.data.decode.writer import VideoWriter

NUM_BITS = 8
ON, OFF = 230, 25

CODECS = {"webm": "libvpx-vp9", "avi": "mpeg4"}  # any other suffix: libx264 (yuv420p throughout)


def draw_index(index: int, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 frame carrying ``index`` in 8 vertical bands (bit 0 on the left); a red corner marker."""
    frame = np.full((height, width, 3), OFF, dtype=np.uint8)
    band = width // NUM_BITS
    for bit in range(NUM_BITS):
        if (index >> bit) & 1:
            frame[:, bit * band : (bit + 1) * band] = ON
    frame[: height // 6, : width // 6] = (230, 20, 20)
    return frame


def read_index(frame: torch.Tensor | np.ndarray) -> int:
    """Inverse of :func:`draw_index` for one (H, W, 3) frame (any size): reads the centre of each band."""
    f = torch.as_tensor(np.asarray(frame)).float().mean(-1)
    h, w = f.shape
    value = 0
    for bit in range(NUM_BITS):
        x0, x1 = int((bit + 0.3) * w / NUM_BITS), int((bit + 0.7) * w / NUM_BITS)
        if f[h // 3 : h, x0 : max(x1, x0 + 1)].mean() > (ON + OFF) / 2:
            value |= 1 << bit
    return value


def write_video(
    path: str | os.PathLike,
    num_frames: int,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    rotation: int | None = None,
    pts: list[int] | None = None,
    bframes: int = 3,
    codec: str | None = None,
) -> Path:
    """Write a test video; the container follows the suffix (.mp4/.mkv h264 with B-frames, .webm vp9, .avi mpeg4).

    Args:
        pts: optional explicit presentation times in 1/1000 s for a variable-frame-rate stream.
        rotation: display rotation in degrees counter-clockwise stored as metadata (pixels stay unrotated).
        codec: override the suffix's codec ("libx264" in .avi gives decode-order packet timestamps; "mpeg4" in
            .avi gets B-frames when ``bframes`` > 0).
    """
    path = Path(path)
    codec = codec or CODECS.get(path.suffix.lstrip("."), "libx264")
    options, x264_params = {}, None
    if codec == "libx264":
        x264_params = {"bframes": bframes, "b-adapt": 0, "keyint": 12, "min-keyint": 12, "scenecut": 0}
    if codec == "mpeg4" and bframes:
        options = {"bf": str(min(bframes, 2)), "g": "12"}
    if codec == "libvpx-vp9":
        options = {"deadline": "realtime", "cpu-used": "8", "g": "12"}
    with VideoWriter(path, fps, codec=codec, x264_params=x264_params, options=options, rotation=rotation,
                     time_base=Fraction(1, 1000) if pts is not None else None) as writer:
        for i in range(num_frames):
            writer.write(draw_index(i, width, height), pts=None if pts is None else [pts[i]])
    return path


def corrupt_midway(src: str | os.PathLike, dst: str | os.PathLike, start: float = 0.55, stop: float = 0.62) -> Path:
    """Copy of ``src`` with the bytes in [start, stop) of its length replaced by seeded noise (a stream corrupted
    partway: the header and early frames are intact, FFmpeg fails on a packet in the middle)."""
    data = bytearray(Path(src).read_bytes())
    a, b = int(len(data) * start), int(len(data) * stop)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    Path(dst).write_bytes(bytes(data))
    return Path(dst)


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    """A session-wide folder of small test videos (written once)."""
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "h264.mp4", 40)
    write_video(root / "vp9.webm", 40)
    write_video(root / "mpeg4.avi", 40, bframes=0)  # decord seeks exactly in AVI without B-frames
    write_video(root / "short.mp4", 5)
    write_video(root / "rot90.mp4", 10, rotation=90)
    vfr = [0, 40, 50, 130, 140, 150, 300, 310, 360, 400, 440, 450, 600, 610, 700, 720]
    write_video(root / "vfr.mp4", len(vfr), pts=vfr)
    (root / "zero.mp4").write_bytes(b"")
    # seeded noise: os.urandom bytes were now and then taken by FFmpeg for a container without a video stream
    (root / "garbage.mp4").write_bytes(np.random.default_rng(0).bytes(4096))
    data = (root / "h264.mp4").read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 3])
    write_video(root / "h264.avi", 64, codec="libx264")  # packet timestamps in decode order
    write_video(root / "bframes.avi", 60, codec="mpeg4")
    write_video(root / "h264_30fps.mkv", 90, fps=30)  # millisecond timestamps: 33/34 ms steps
    write_video(root / "big.mp4", 50, width=160, height=120, bframes=2)
    corrupt_midway(root / "big.mp4", root / "corrupt.mp4")
    return root


@pytest.fixture()
def make_video():
    """The :func:`write_video` function."""
    return write_video


@pytest.fixture()
def frame_index():
    """The :func:`read_index` function."""
    return read_index


@pytest.fixture()
def draw_frame():
    """The :func:`draw_index` function."""
    return draw_index


@pytest.fixture()
def faulty_decoder(monkeypatch, tmp_path):
    """Make ``open_video`` crash (SIGSEGV) or hang for chosen file names, in decode children started from now on
    (they are forked, so they inherit the patch); also counts every open per file name in ``opened``."""
    real = backends.open_video
    faults: dict[str, str] = {}
    log = tmp_path / "opens.txt"

    def patched(path, *args, **kwargs):
        with open(log, "a") as f:
            f.write(os.path.basename(path) + "\n")
        if faults.get(os.path.basename(path)) == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if faults.get(os.path.basename(path)) == "hang":
            time.sleep(3600)
        return real(path, *args, **kwargs)

    sandbox_module.stop_sandbox()  # the next request forks a child that has the patch
    monkeypatch.setattr(backends, "open_video", patched)

    def opened(name: str) -> int:
        if not os.path.exists(log):
            return 0
        with open(log) as f:
            return sum(line.strip() == name for line in f)

    yield faults, opened
    sandbox_module.stop_sandbox()
