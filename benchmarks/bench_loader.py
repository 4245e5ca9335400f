"""Training-clip throughput of the data pipeline vs raw decord decoding, and the bytes each batch moves.

In one process (rows, clips per second, median over interleaved rounds):
  raw decord      decord.VideoReader(path).get_batch(indices) for the clip indices the dataset draws
  raw pyav        gnvideo PyAVReader.frames(indices) (the fallback path: keyframe seek + timestamp match)
  dataset auto    KineticsDataset[i] in train mode: probe + decode + uint8 crop (what the workers run; a crop that
                  needs enlarging is sent at source resolution and enlarged by BatchTransform on the device)
  dataset decord  the same with backend="decord" (no PyAV rotation probe)
Through a DataLoader with 1 and 2 workers (persistent, batch --batch-size): "raw" is a dataset that only runs
decord get_batch for the same clips, "dataset" is the training dataset; each round runs both, alternating which goes
first, and the ratio is the median dataset rate over the median raw rate. Target: dataset >= 1.0x raw with one worker.
The batch size line gives the bytes of one training batch as the workers now send it (uint8) and as they did before
(float32, 4x), from the tensor sizes; the last line times BatchTransform (uint8 -> enlarged, flipped, normalised
float32) on this CPU, the work that moved to the device.

Usage: python benchmarks/bench_loader.py [--root DIR_WITH_VIDEOS] [--clips 12] [--rounds 5] [--json OUT]
Without --root it writes 340x256, 10 s, 30 fps h264 videos (B-frames, Kinetics-like) into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch


def make_videos(folder: str, count: int, width: int = 340, height: int = 256, frames: int = 300) -> list[str]:
    """Smoothly moving textured h264 videos (x264's default preset and crf: B-frames, keyint 250)."""
    from gnvideo.data.decode.writer import write_video

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    paths = []
    for v in range(count):
        path = os.path.join(folder, f"video{v:03d}_000000_000010.mp4")
        noise = rng.integers(0, 40, (height, width, 3), dtype=np.uint8)
        fx, fy = rng.uniform(0.02, 0.08, 2)

        def frame(i: int, fx: float = fx, fy: float = fy, noise: np.ndarray = noise) -> np.ndarray:
            base = 110 + 80 * np.sin(fx * xx + 0.15 * i) * np.cos(fy * yy - 0.1 * i)
            return np.stack([base, np.roll(base, 7, 1), 255 - base], -1).astype(np.uint8) + np.roll(noise, 2 * i, 1)

        write_video(path, (frame(i) for i in range(frames)), fps=30, preset="medium", crf=23)
        paths.append(path)
    return paths


class _RawDecord(torch.utils.data.Dataset):
    """decord get_batch of the clip the training dataset draws for item i (no crop, no transform)."""

    def __init__(self, paths: list[str], lengths: list[int], num_frames: int, sampling_rate: int) -> None:
        self.paths, self.lengths, self.num_frames, self.sampling_rate = paths, lengths, num_frames, sampling_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        import decord

        from gnvideo.data.sampling import sample_generator, train_clip_indices

        idx = train_clip_indices(self.lengths[i], self.num_frames, self.sampling_rate, sample_generator(0, 0, i))
        return torch.from_numpy(decord.VideoReader(self.paths[i], num_threads=1).get_batch(idx).asnumpy())


def _loader_rates(datasets: dict, workers: int, clips: int, rounds: int, batch: int) -> dict[str, list[float]]:
    """Clips/s of each dataset through its own persistent DataLoader, rounds interleaved."""
    from torch.utils.data import DataLoader

    n = len(next(iter(datasets.values())))
    order = [i % n for i in range(clips)]
    loaders = {name: DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers, persistent_workers=True,
                                prefetch_factor=2) for name, ds in datasets.items()}
    for loader in loaders.values():  # start the workers, warm up
        for _ in loader:
            pass
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(rounds):
        names = list(loaders) if r % 2 == 0 else list(loaders)[::-1]
        for name in names:
            t0 = time.perf_counter()
            for _ in loaders[name]:
                pass
            rates[name].append(clips / (time.perf_counter() - t0))
    del loaders
    return rates


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
    parser.add_argument("--batch-size", type=int, default=4, help="DataLoader batch (clips)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DataLoader worker counts")
    parser.add_argument("--resize-in-worker", action="store_true",
                        help="enlarge training crops in the worker (the DataModule's choice on a CPU trainer) instead "
                             "of on the device (its choice on a GPU)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import decord

    from gnvideo.data.annotations import VideoEntry
    from gnvideo.data.decode import PyAVReader
    from gnvideo.data.kinetics import ClipDataset, _collect_paths
    from gnvideo.data.sampling import sample_generator, train_clip_indices
    from gnvideo.data.transforms import BatchTransform, TrainTransform

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
                  transform=TrainTransform(short_side_range=tuple(args.short_side), crop_size=args.crop,
                                           upscale_on_device=not args.resize_in_worker))
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
    result: dict = {"config": {**vars(args), "videos": len(paths), "decord": decord.__version__,
                               "torch_threads": 1, "cpu_count": os.cpu_count()}, "in_process": {}, "loader": {}}
    where = "in the worker" if args.resize_in_worker else "on the device"
    print(f"\nclip {args.num_frames}x{args.sampling_rate}, crop {args.crop}, short side {tuple(args.short_side)}, "
          f"{len(paths)} videos, {args.rounds} rounds, torch threads 1, decord {decord.__version__}, "
          f"crops enlarged {where}")
    print("one process:")
    print(f"{'method':<16}{'clips/s':>10}{'ms/clip':>10}{'vs raw decord':>15}")
    for name, r in rates.items():
        med = statistics.median(r)
        result["in_process"][name] = {"clips_per_s": med, "ratio": med / base, "rounds": r}
        print(f"{name:<16}{med:>10.2f}{1e3 / med:>10.1f}{med / base:>14.2f}x")

    loader_sets = {"raw": _RawDecord(paths, lengths, args.num_frames, args.sampling_rate),
                   "dataset": datasets["decord"]}
    print(f"DataLoader (batch {args.batch_size}, persistent workers, {args.clips} clips per round):")
    print(f"{'workers':<9}{'raw clips/s':>13}{'dataset clips/s':>17}{'ratio':>8}")
    for workers in args.workers:
        lr = _loader_rates(loader_sets, workers, args.clips, args.rounds, args.batch_size)
        raw, ds = statistics.median(lr["raw"]), statistics.median(lr["dataset"])
        result["loader"][str(workers)] = {"raw_clips_per_s": raw, "dataset_clips_per_s": ds, "ratio": ds / raw,
                                          "raw_rounds": lr["raw"], "dataset_rounds": lr["dataset"]}
        print(f"{workers:<9}{raw:>13.2f}{ds:>17.2f}{ds / raw:>7.2f}x")

    items = [datasets["decord"][i % len(paths)] for i in range(args.batch_size)]
    video = torch.stack([it["video"] for it in items])  # what the default collate builds
    after = video.numel() * video.element_size()
    flips = torch.tensor([it["flip"] for it in items])
    boxes = torch.tensor([it["box_size"] for it in items])
    normed = BatchTransform()(video, flips, boxes)
    before = normed.numel() * normed.element_size()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        BatchTransform()(video, flips, boxes)
        times.append(time.perf_counter() - t0)
    device_ms = 1e3 * statistics.median(times) / len(items)
    result["bytes_per_batch"] = {"batch_size": args.batch_size, "shape": list(video.shape),
                                 "before_float32": before, "after_uint8": after}
    print(f"bytes per batch {tuple(video.shape)}: before (float32) {before / 2**20:.1f} MiB, "
          f"after (uint8) {after / 2**20:.1f} MiB ({before / after:.0f}x fewer)")
    result["batch_transform_cpu_ms_per_clip"] = device_ms
    print(f"BatchTransform on this CPU (1 thread): {device_ms:.1f} ms per clip (in training it runs on the device)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
