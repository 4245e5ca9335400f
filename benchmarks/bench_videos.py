"""Videos for the data-loading benchmarks: Kinetics-like sources and the two ways of preparing them.

Sources (what a download gives, before any prep): 10 s, 30 fps, 340x256, h264 at high quality (crf 18), with content
that makes x264 work as on real video: a textured background panned by the camera, three textured objects moving
across it, and sensor noise (so motion search, residuals and keyframe placement behave as on camera footage: x264's
default settings put keyframes at frames 0 and 250 only, as in the Kinetics clips we measured).

Two preps of each source, both at short side 256:
  x264-default  what the peers' prep scripts write (ffmpeg ... -c:v libx264, i.e. preset medium, crf 23, x264's
                default keyframe interval 250); here through gnvideo's ``transcode`` with those settings
  gnvideo       ``gnvideo-prepare-kinetics``' settings (veryfast, crf 23, ``prepared_x264_params()``)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PEERS = {"preset": "medium", "crf": 23, "x264_params": None}


def _texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth random texture in [0, 1], (height, width, 3): random cells of ``cell`` pixels, box-blurred."""
    small = rng.random((height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    big = np.kron(small, np.ones((cell, cell, 1), np.float32))[:height, :width]
    k = max(cell // 2, 1)
    c = np.cumsum(np.cumsum(np.pad(big, ((k, k), (k, k), (0, 0)), mode="edge"), 0), 1)
    return ((c[2 * k:, 2 * k:] - c[:-2 * k, 2 * k:] - c[2 * k:, :-2 * k] + c[:-2 * k, :-2 * k]) / (2 * k) ** 2)[
        :height, :width]


def source_frames(seed: int, width: int = 340, height: int = 256, frames: int = 300):
    """Frames (H, W, 3) uint8 of one source video: panned background, three moving textured discs, noise."""
    rng = np.random.default_rng(seed)
    background = (_texture(rng, 2 * height, 3 * width, 8) * 0.6 + _texture(rng, 2 * height, 3 * width, 2) * 0.4)
    background = background * 200 + 20
    vx, vy = rng.uniform(0.5, 2.0), rng.uniform(-0.6, 0.6)
    discs = [(rng.uniform(20, 45), _texture(rng, 96, 96, 4) * 255, rng.uniform(0, width), rng.uniform(0, height),
              rng.uniform(-3, 3), rng.uniform(-2, 2)) for _ in range(3)]
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        x0, y0 = int(i * vx) % (2 * width), int(height / 2 + i * vy) % height
        frame = background[y0:y0 + height, x0:x0 + width].copy()
        for radius, texture, cx0, cy0, dx, dy in discs:
            cx, cy = (cx0 + dx * i) % width, (cy0 + dy * i) % height
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius * radius
            frame[inside] = texture[(yy[inside] - int(cy)) % 96, (xx[inside] - int(cx)) % 96]
        frame += rng.normal(0, 3, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def make_sources(folder: str | os.PathLike, count: int, seconds: float = 10.0, fps: int = 30) -> list[str]:
    """``count`` source videos in ``folder`` (kept when already there)."""
    from gnvideo.data.decode.writer import write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for v in range(count):
        path = folder / f"source{v:02d}.mp4"
        if not path.is_file():
            write_video(path, source_frames(v, frames=int(seconds * fps)), fps=fps, preset="veryfast", crf=18)
        paths.append(str(path))
    return paths


def prepare_both(sources: list[str], folder: str | os.PathLike, short_side: int = 256) -> dict[str, list[str]]:
    """``{"x264-default": [...], "gnvideo": [...]}``: each source prepared both ways (kept when already there)."""
    from gnvideo.data.decode.transcode import prepared_x264_params, transcode

    settings = {"x264-default": PEERS, "gnvideo": {"preset": "veryfast", "crf": 23,
                                                   "x264_params": prepared_x264_params()}}
    out: dict[str, list[str]] = {}
    for name, options in settings.items():
        params = options["x264_params"] or {}
        tag = "_".join([options["preset"], f"crf{options['crf']}"] + [f"{k}{v}" for k, v in sorted(params.items())])
        target = Path(folder) / f"{name}_{tag}"  # a settings change never reuses older files
        target.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for src in sources:
            dst = target / Path(src).name
            if not dst.is_file():
                transcode(src, dst, 0.0, None, short_side=short_side, **options)
            out[name].append(str(dst))
    return out


__all__ = ["PEERS", "make_sources", "prepare_both", "source_frames"]
