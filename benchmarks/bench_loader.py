"""Training-clip throughput of the data pipeline vs raw decoding, in one process (= one DataLoader worker).

Rows (clips per second, median over interleaved rounds):
  raw decord      decord.VideoReader(path).get_batch(indices) for the clip indices the dataset draws
  raw pyav        gnvideo PyAVReader.frames(indices) (the fallback path: keyframe seek + timestamp match)
  dataset auto    KineticsDataset[i] in train mode: probe + decode + TrainTransform (what training runs)
  dataset decord  the same with backend="decord" (no PyAV rotation probe)
Ratios are against raw decord; the target is dataset >= 0.9x raw decord. Methods are interleaved clip by clip
(same clip indices for all), so machine load changes hit all of them alike; medians over rounds.

Usage: python benchmarks/bench_loader.py [--root DIR_WITH_VIDEOS] [--clips 24] [--rounds 5]
Without --root it writes 340x256, 10 s, 30 fps h264 videos (B-frames, Kinetics-like) into a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def make_videos(folder: str, count: int, width: int = 340, height: int = 256, frames: int = 300) -> list[str]:
    """Smoothly moving textured h264 videos (libx264 defaults: B-frames, keyint 250)."""
    import av

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for v in range(count):
        path = os.path.join(folder, f"video{v:03d}_000000_000010.mp4")
        noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        fx, fy = rng.uniform(0.02, 0.08, 2)
        with av.open(path, "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                base = 110 + 80 * np.sin(fx * xx + 0.15 * i) * np.cos(fy * yy - 0.1 * i)
                img = np.stack([base, np.roll(base, 7, 1), 255 - base], -1).astype(np.uint8)
                img = img + np.roll(noise, 2 * i, axis=1)
                for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder with videos (searched recursively); default: generate")
    parser.add_argument("--num-videos", type=int, default=6)
    parser.add_argument("--clips", type=int, default=12, help="clips per round and method")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--sampling-rate", type=int, default=2)
    parser.add_argument("--short-side", type=int, nargs=2, default=(256, 320))
    parser.add_argument("--crop", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(1)

    import decord

    from gnvideo.data.annotations import VideoEntry
    from gnvideo.data.kinetics import ClipDataset, _collect_paths
    from gnvideo.data.readers import PyAVReader
    from gnvideo.data.sampling import sample_generator, train_clip_indices

    tmp = None
    if args.root:
        paths = _collect_paths(args.root)[: args.num_videos]
    else:
        tmp = tempfile.TemporaryDirectory()
        print(f"writing {args.num_videos} videos (340x256, 300 frames, h264) to {tmp.name} ...", flush=True)
        paths = make_videos(tmp.name, args.num_videos)
    if not paths:
        raise SystemExit(f"no videos found under {args.root}")
    common = dict(num_frames=args.num_frames, sampling_rate=args.sampling_rate,
                  short_side_range=tuple(args.short_side), crop_size=args.crop)
    entries = [VideoEntry(p, 0) for p in paths]
    datasets = {b: ClipDataset(entries, "train", ["x"], backend=b, **common) for b in ("auto", "decord")}
    lengths = [len(decord.VideoReader(p, num_threads=1)) for p in paths]

    def clip(i: int) -> tuple[str, list[int]]:
        v = i % len(paths)
        return paths[v], train_clip_indices(lengths[v], args.num_frames, args.sampling_rate, sample_generator(0, 0, v))

    def raw_decord(i):
        path, idx = clip(i)
        return decord.VideoReader(path, num_threads=1).get_batch(idx).asnumpy()

    def raw_pyav(i):
        path, idx = clip(i)
        return PyAVReader(path).frames(idx)

    methods = {
        "raw decord": raw_decord,
        "raw pyav": raw_pyav,
        "dataset auto": lambda i: datasets["auto"][i % len(paths)],
        "dataset decord": lambda i: datasets["decord"][i % len(paths)],
    }
    for fn in methods.values():  # warm-up
        fn(0)
    # clip-level interleaving: every method decodes clip i back to back, so load changes hit all methods alike
    rates: dict[str, list[float]] = {name: [] for name in methods}
    for r in range(args.rounds):
        spent = dict.fromkeys(methods, 0.0)
        for i in range(r * args.clips, (r + 1) * args.clips):
            names = list(methods)
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order: no position bias
                t0 = time.perf_counter()
                methods[name](i)
                spent[name] += time.perf_counter() - t0
        for name in methods:
            rates[name].append(args.clips / spent[name])
    base = statistics.median(rates["raw decord"])
    print(f"\nclip {args.num_frames}x{args.sampling_rate}, crop {args.crop}, short side {tuple(args.short_side)}, "
          f"{len(paths)} videos, {args.rounds} rounds, 1 process, torch threads 1, decord {decord.__version__}")
    print(f"{'method':<16}{'clips/s':>10}{'ms/clip':>10}{'vs raw decord':>15}")
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"{name:<16}{med:>10.2f}{1e3 / med:>10.1f}{med / base:>14.2f}x")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
