"""Synthetic motion dataset in the Kinetics directory layout.

Every clip shows one textured shape over a textured, noisy background. The classes differ only by how the shape
moves (translation left/right/up/down, rotation clockwise/counter-clockwise, growing/shrinking). All appearance
parameters (shape, colours, background, start position, size and angle, resolution, fps, length) and the speed
magnitude are drawn from the same distribution for every class, and the class is applied last, so the first frame of
a clip is independent of its class: a network has to model time to classify. Positions wrap around the frame edges
(torus) and sizes follow a sawtooth in log-space with a uniformly random phase, so every frame's marginal
distribution is class-independent too.

Layout written by :func:`make_synthetic_dataset`::

    root/train/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4
    root/val/<label>/...
    root/annotations/train.csv, val.csv   (label,youtube_id,time_start,time_end,split)
    root/labels.txt                       (one class name per line)
    root/.synthetic_complete.json         (written last, atomically; generation is skipped when it matches)

Rendering needs numpy only; files, CSVs and names follow :mod:`gnvideo.data.layout`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np

from .decode.writer import write_video
from .layout import clip_filename, write_annotation_csv, write_text_atomic

__all__ = [
    "CLASS_NAMES",
    "COMPLETE_MARKER",
    "ClipParams",
    "SyntheticSummary",
    "make_synthetic_dataset",
    "render_clip",
    "sample_clip_params",
]

CLASS_NAMES = (
    "moving left",
    "moving right",
    "moving up",
    "moving down",
    "rotating (clockwise)",
    "rotating (counter-clockwise)",
    "growing",
    "shrinking",
)
_MOTIONS = {  # class -> (animated quantity, direction)
    "moving left": ("x", -1), "moving right": ("x", 1), "moving up": ("y", -1), "moving down": ("y", 1),
    "rotating (clockwise)": ("angle", 1), "rotating (counter-clockwise)": ("angle", -1),
    "growing": ("phase", 1), "shrinking": ("phase", -1),
}
SHAPES = ("ellipse", "rectangle", "triangle", "cross")
COMPLETE_MARKER = ".synthetic_complete.json"
# 2: larger shapes, faster motion, calmer backgrounds (learnable in a CPU demo); 3: narrow background-colour range
# (clip-constant colour offsets were ~87 % of the pixel variance and swamped BatchNorm's batch statistics)
_FORMAT_VERSION = 3
_ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SIZE_RANGE = (0.18, 0.36)  # shape "radius" as a fraction of the short side (log-uniform)
_RENDER_CHUNK = 32  # frames rendered at once (bounds memory to ~tens of MB)


@dataclasses.dataclass(frozen=True)
class ClipParams:
    """Everything needed to render one clip deterministically (from :func:`sample_clip_params`)."""

    label_index: int  # class index into CLASS_NAMES
    width: int  # frame size in pixels (even)
    height: int
    fps: int  # frames per second
    num_frames: int
    shape: str  # one of SHAPES
    aspect: float  # minor/major extent of the shape, 0.4-0.75
    center: tuple[float, float]  # start centre (x, y) as fractions of width/height, in [0, 1)
    angle: float  # start orientation (rad)
    log_size_phase: float  # start position inside the log-size range, in [0, 1)
    speed: float  # motion magnitude 0.5-1; scales translation, rotation and growth rates
    shape_color: tuple[float, float, float]  # RGB 0-255
    stripe_freq: float  # stripes across the shape (texture that turns and scales with it)
    bg_color: tuple[float, float, float]  # background base RGB
    bg_gratings: tuple[tuple[float, ...], ...]  # (amplitude, fx, fy, phase, gain_r, gain_g, gain_b) per grating
    static_noise: float  # std of the fixed background texture noise (0-255 units)
    frame_noise: float  # std of the per-frame sensor noise
    noise_seed: int

    @property
    def duration(self) -> float:
        """Clip length in seconds."""
        return self.num_frames / self.fps


@dataclasses.dataclass
class SyntheticSummary:
    """What :func:`make_synthetic_dataset` did (or found)."""

    root: Path
    label_names: list[str]
    num_train: int
    num_val: int
    skipped: bool
    seconds: float


def sample_clip_params(rng: np.random.Generator, label_index: int, short_side_range: tuple[int, int] = (72, 96),
                       fps_range: tuple[int, int] = (12, 30),
                       duration_range: tuple[float, float] = (1.5, 4.0)) -> ClipParams:
    """Draw the parameters of one clip.

    The class is used only after every other draw, so two calls with generators in the same state and different
    ``label_index`` give clips with identical first frames.

    Args:
        rng: numpy generator (consumed).
        label_index: class index into ``CLASS_NAMES``.
        short_side_range: inclusive range of the short side in pixels (rounded down to even).
        fps_range: inclusive range of frames per second.
        duration_range: range of the clip length in seconds.
    """
    if not 0 <= label_index < len(CLASS_NAMES):
        raise ValueError(f"label_index must be in [0, {len(CLASS_NAMES)}), got {label_index}")
    short = int(rng.integers(short_side_range[0], short_side_range[1] + 1)) // 2 * 2
    aspect = (4 / 3, 16 / 9)[int(rng.integers(2))]
    long = int(round(short * aspect / 2)) * 2
    portrait = rng.random() < 0.25
    width, height = (short, long) if portrait else (long, short)
    fps = int(rng.integers(fps_range[0], fps_range[1] + 1))
    num_frames = max(2, int(round(rng.uniform(*duration_range) * fps)))
    gratings = []
    for _ in range(3):
        amp = rng.uniform(4, 12)
        freq = rng.uniform(1.0, 8.0)  # cycles across the frame
        theta = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        gain = rng.uniform(0.3, 1.0, size=3)
        gratings.append((amp, freq * math.cos(theta), freq * math.sin(theta), phase, *map(float, gain)))
    bg_color = rng.uniform(100, 156, size=3)  # narrow: a clip-constant colour must not dominate the pixel variance
    # the shape stands out from the background (brighter or darker by 70-110 levels), whatever the class
    shape_color = np.clip(bg_color + rng.uniform(70, 110, size=3), 0, 255)
    params = ClipParams(
        label_index=0, width=width, height=height, fps=fps, num_frames=num_frames,
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        aspect=float(rng.uniform(0.4, 0.75)),
        center=(float(rng.random()), float(rng.random())),
        angle=float(rng.uniform(0, 2 * math.pi)),
        log_size_phase=float(rng.random()),
        speed=float(rng.uniform(0.5, 1.0)),
        shape_color=tuple(float(c) for c in shape_color),
        stripe_freq=float(rng.uniform(1.0, 3.0)),
        bg_color=tuple(float(c) for c in bg_color),
        bg_gratings=tuple(gratings),
        static_noise=float(rng.uniform(2, 6)),
        frame_noise=float(rng.uniform(2, 5)),
        noise_seed=int(rng.integers(2**63)),
    )
    return dataclasses.replace(params, label_index=int(label_index))


def _motion(p: ClipParams, t: np.ndarray, short: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre x/y (pixels, unwrapped), angle (rad) and radius (pixels) at times ``t`` (s), each of shape (len(t),).

    A positive angle turns clockwise on screen (image coordinates, y down).
    """
    quantity, sign = _MOTIONS[CLASS_NAMES[p.label_index]]
    lo, hi = math.log(_SIZE_RANGE[0] * short), math.log(_SIZE_RANGE[1] * short)
    rate = {"x": 1.2 * short, "y": 1.2 * short,  # 0.6-1.2 short sides per second
            "angle": 5.2,  # 150-300 degrees per second
            "phase": 1.0 / (hi - lo)}[quantity]  # log-size 0.5-1 per second, as a fraction of the sawtooth range
    values = {"x": p.center[0] * p.width, "y": p.center[1] * p.height, "angle": p.angle, "phase": p.log_size_phase}
    track = {k: np.full_like(t, v) for k, v in values.items()}
    track[quantity] = track[quantity] + sign * p.speed * rate * t
    radius = np.exp(lo + (hi - lo) * np.mod(track["phase"], 1.0))
    return track["x"], track["y"], track["angle"], radius


def _signed_distance(shape: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Approximate signed distance (in radius units, negative inside) of local coordinates to the shape outline."""
    if shape == "ellipse":
        return (np.sqrt(u * u + (v / aspect) ** 2) - 1.0) * aspect
    if shape == "rectangle":
        return np.maximum(np.abs(u) - 1.0, np.abs(v) - aspect)
    if shape == "triangle":  # equilateral triangle with one vertex at +u, inscribed in the unit circle
        d = -u - 0.5
        for a in (math.pi / 3, -math.pi / 3):
            d = np.maximum(d, math.cos(a) * u + math.sin(a) * v - 0.5)
        return d
    if shape == "cross":  # two unequal arms, so it has no rotational symmetry below 180 degrees
        arm = 0.5 * aspect
        d1 = np.maximum(np.abs(u) - 1.0, np.abs(v) - arm)
        d2 = np.maximum(np.abs(u) - arm, np.abs(v) - 0.65)
        return np.minimum(d1, d2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _background(p: ClipParams) -> np.ndarray:
    """Static textured background, float32 (H, W, 3) in 0-255 units (before clipping)."""
    y = (np.arange(p.height, dtype=np.float32) / p.height)[:, None]
    x = (np.arange(p.width, dtype=np.float32) / p.width)[None, :]
    bg = np.empty((p.height, p.width, 3), dtype=np.float32)
    bg[:] = np.asarray(p.bg_color, dtype=np.float32)
    for amp, fx, fy, phase, g0, g1, g2 in p.bg_gratings:
        wave = amp * np.sin(2 * math.pi * (fx * x + fy * y) + phase)
        bg += wave[..., None] * np.asarray((g0, g1, g2), dtype=np.float32)
    rng = np.random.default_rng([p.noise_seed, 0])
    bg += p.static_noise * rng.standard_normal(bg.shape, dtype=np.float32)
    return bg


def render_clip(p: ClipParams, noise: bool = True, return_alpha: bool = False) -> np.ndarray | tuple:
    """Render a clip with numpy (vectorized over pixels and frames).

    Args:
        p: clip parameters from :func:`sample_clip_params`.
        noise: add static texture noise and per-frame sensor noise (False: clean frames, for tests).
        return_alpha: also return the shape coverage, float32 (T, H, W) in [0, 1].

    Returns:
        uint8 frames (T, H, W, 3), or ``(frames, alpha)`` when ``return_alpha``.
    """
    short = min(p.width, p.height)
    t = np.arange(p.num_frames, dtype=np.float64) / p.fps
    cx, cy, angle, radius = _motion(p, t, short)
    bg = _background(p) if noise else _background(dataclasses.replace(p, static_noise=0.0))
    xs = np.arange(p.width, dtype=np.float32) + 0.5
    ys = np.arange(p.height, dtype=np.float32) + 0.5
    color = np.asarray(p.shape_color, dtype=np.float32)
    frames = np.empty((p.num_frames, p.height, p.width, 3), dtype=np.uint8)
    alphas = np.empty((p.num_frames, p.height, p.width), dtype=np.float32) if return_alpha else None
    noise_rng = np.random.default_rng([p.noise_seed, 1])
    for s in range(0, p.num_frames, _RENDER_CHUNK):
        e = min(s + _RENDER_CHUNK, p.num_frames)
        f32 = np.float32
        # offsets from the centre, wrapped onto the torus: (T, 1, W) and (T, H, 1)
        dx = np.mod(xs[None, None, :] - cx[s:e, None, None].astype(f32) + p.width / 2, p.width) - p.width / 2
        dy = np.mod(ys[None, :, None] - cy[s:e, None, None].astype(f32) + p.height / 2, p.height) - p.height / 2
        cos = np.cos(angle[s:e]).astype(f32)[:, None, None]
        sin = np.sin(angle[s:e]).astype(f32)[:, None, None]
        r = radius[s:e].astype(f32)[:, None, None]
        u = (cos * dx + sin * dy) / r  # local coordinates: rotate by -angle, scale by 1/radius
        v = (cos * dy - sin * dx) / r
        dist_px = _signed_distance(p.shape, u, v, p.aspect) * r
        alpha = np.clip(0.5 - dist_px, 0.0, 1.0)  # one-pixel anti-aliased edge
        stripes = 0.8 + 0.2 * np.sin(2 * math.pi * p.stripe_freq * u)
        fill = stripes[..., None] * color
        out = bg[None] + alpha[..., None] * (fill - bg[None])
        if noise:
            out += p.frame_noise * noise_rng.standard_normal(out.shape, dtype=np.float32)
        frames[s:e] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        if alphas is not None:
            alphas[s:e] = alpha
    return (frames, alphas) if return_alpha else frames


def _render_and_write(job: tuple) -> str:
    """Worker: render one clip and write it atomically. ``job`` = (path, seed, label_index, sampling kwargs)."""
    path, seed, label_index, kwargs = job
    params = sample_clip_params(np.random.default_rng(seed), label_index, **kwargs)
    write_video(path, render_clip(params), params.fps, crf=20, deterministic=True)  # h264/yuv420p, bit-reproducible
    return str(path)


def _plan(root: Path, num_classes: int, counts: dict[str, int], seed: int, kwargs: dict):
    """Deterministic list of (split, label, youtube_id, start, end, path, clip_seed, label_index)."""
    rng = np.random.default_rng([seed, 0x5EED])
    used: set[str] = set()
    plan = []
    for split, per_class in counts.items():
        for label_index in range(num_classes):
            for _ in range(per_class):
                while True:
                    yid = "".join(_ID_ALPHABET[i] for i in rng.integers(len(_ID_ALPHABET), size=11))
                    if yid not in used:
                        used.add(yid)
                        break
                clip_seed = int(rng.integers(2**63))
                # the duration only needs the clip parameters; sample them here too (cheap) for the CSV times
                params = sample_clip_params(np.random.default_rng(clip_seed), label_index, **kwargs)
                start = int(rng.integers(0, 290))
                end = start + max(1, int(round(params.duration)))
                label = CLASS_NAMES[label_index]
                path = root / split / label / clip_filename(yid, start, end)
                plan.append((split, label, yid, start, end, path, clip_seed, label_index))
    return plan


def make_synthetic_dataset(root: str | os.PathLike, num_classes: int = 8, videos_per_class: int = 40,
                           val_videos_per_class: int = 10, seed: int = 0, workers: int | None = None,
                           short_side_range: tuple[int, int] = (72, 96), fps_range: tuple[int, int] = (12, 30),
                           duration_range: tuple[float, float] = (1.5, 4.0), force: bool = False,
                           progress: bool = False) -> SyntheticSummary:
    """Generate the synthetic motion dataset under ``root`` (skipped when a matching complete dataset is there).

    Args:
        root: output directory (created).
        num_classes: number of classes, 2-8; the first ``num_classes`` of ``CLASS_NAMES`` are used.
        videos_per_class: training clips per class.
        val_videos_per_class: validation clips per class.
        seed: master seed; the same seed and sizes give identical annotation files and frames.
        workers: worker processes (None: all CPUs; 0 or 1: in this process).
        short_side_range, fps_range, duration_range: clip size (pixels), frame rate (1/s) and length (s) ranges.
        force: regenerate even when a complete dataset with the same settings exists.
        progress: show a rich progress bar.

    Returns:
        A :class:`SyntheticSummary`.

    Raises:
        ValueError: bad sizes, or ``root`` holds a complete dataset made with other settings.
    """
    t0 = time.perf_counter()
    root = Path(root)
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"num_classes must be in [2, {len(CLASS_NAMES)}], got {num_classes}")
    if videos_per_class < 1 or val_videos_per_class < 0:
        raise ValueError(
            f"videos_per_class must be >= 1 and val_videos_per_class >= 0, got {videos_per_class}, "
            f"{val_videos_per_class}"
        )
    for name, (lo, hi) in (("short_side_range", short_side_range), ("fps_range", fps_range),
                           ("duration_range", duration_range)):
        if not 0 < lo <= hi:
            raise ValueError(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
    if short_side_range[0] < 16:
        raise ValueError(f"short_side_range must start at >= 16 pixels, got {short_side_range}")
    kwargs = {"short_side_range": tuple(short_side_range), "fps_range": tuple(fps_range),
              "duration_range": tuple(float(d) for d in duration_range)}
    settings = {"version": _FORMAT_VERSION, "num_classes": num_classes, "videos_per_class": videos_per_class,
                "val_videos_per_class": val_videos_per_class, "seed": seed,
                **{k: list(v) for k, v in kwargs.items()}}
    labels = list(CLASS_NAMES[:num_classes])

    def summary(skipped: bool) -> SyntheticSummary:
        return SyntheticSummary(root, labels, num_classes * videos_per_class, num_classes * val_videos_per_class,
                                skipped, time.perf_counter() - t0)

    marker = root / COMPLETE_MARKER
    plan = _plan(root, num_classes, {"train": videos_per_class, "val": val_videos_per_class}, seed, kwargs)
    todo = plan
    if marker.is_file() and not force:
        try:
            found = json.loads(marker.read_text(encoding="utf-8")).get("settings")
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{marker}: unreadable completion marker ({e}); delete it to regenerate") from e
        if found != settings:
            raise ValueError(
                f"{root} already holds a synthetic dataset made with other settings ({marker}: {found}, requested "
                f"{settings}); choose another root, delete it, or pass force=True"
            )
        todo = [e for e in plan if not e[5].is_file()]  # deterministic: re-rendering a lost file restores it
        extras = [root / "labels.txt", root / "annotations" / "train.csv", root / "annotations" / "val.csv"]
        if not todo and all(p.is_file() for p in extras):
            return summary(True)
    if marker.exists():
        marker.unlink()
    for d in {entry[5].parent for entry in todo}:
        d.mkdir(parents=True, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else workers
    _run_jobs([(str(e[5]), e[6], e[7], kwargs) for e in todo], workers, progress)
    for split in ("train", "val"):
        rows = [(e[1], e[2], e[3], e[4], e[0]) for e in plan if e[0] == split]
        write_annotation_csv(root / "annotations" / f"{split}.csv", rows)
    write_text_atomic(root / "labels.txt", "".join(f"{name}\n" for name in labels))
    seconds = time.perf_counter() - t0
    write_text_atomic(marker, json.dumps({"settings": settings, "videos": len(plan), "seconds": seconds}, indent=1))
    return summary(False)


def _run_jobs(jobs: list, workers: int, progress: bool) -> None:
    if not jobs:
        return
    pool = multiprocessing.get_context().Pool(min(workers, len(jobs))) if workers > 1 else None
    try:
        results = pool.imap_unordered(_render_and_write, jobs, chunksize=2) if pool else map(_render_and_write, jobs)
        if progress:
            from rich.progress import track

            results = track(results, total=len(jobs), description="synthetic videos")
        for _ in results:
            pass
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
