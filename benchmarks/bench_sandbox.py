"""What decoding in a child process (``data.decode_sandbox``, :mod:`gnvideo.data.decode.sandbox`) costs per clip.

In one process (per clip, interleaved; medians over rounds):
  reader in-process   open_video(path) + frames_and_close(clip indices)
  reader sandboxed    open_sandboxed(path) + the same (the decode child opens, decodes, closes, hands the frames
                      back through shared memory; the parent copies them out)
  dataset in-process  ClipDataset[i] in train mode with decode_sandbox=False (decode + uint8 crop)
  dataset sandboxed   the same with decode_sandbox=True (the default)
Besides wall time, the one-process rows give CPU time per clip (this process plus the decode child, from
/proc/<pid>/stat on Linux), which a busy machine disturbs less than wall time.
Through a DataLoader (persistent workers, batch --batch-size): the training dataset with decode_sandbox off and on,
rounds alternating which goes first; the ratio is sandboxed clips/s over in-process clips/s, measured in the same run,
and the CPU time per clip of the whole process tree (main process, workers, decode children).

Usage: python benchmarks/bench_sandbox.py [--root DIR_WITH_VIDEOS] [--clips 12] [--rounds 5] [--json OUT]
Without --root it writes 340x256, 10 s, 30 fps h264 videos (B-frames, Kinetics-like) into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_videos import make_sources  # noqa: E402 - next to this file
from cpu_time import cpu_seconds  # noqa: E402


def _tree_cpu_seconds() -> float:
    """CPU time of this process and every live descendant (DataLoader workers, decode children), from /proc."""
    parent, ticks = {}, {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(name)], ticks[int(name)] = int(fields[1]), int(fields[11]) + int(fields[12])
    total, me = 0, os.getpid()
    for pid in ticks:
        p = pid
        while p not in (me, 0, 1) and p in parent:
            p = parent[p]
        if p == me:
            total += ticks[pid]
    return total / os.sysconf("SC_CLK_TCK")


def _loader_rates(datasets: dict, workers: int, clips: int, rounds: int, batch: int) -> tuple[dict, dict]:
    """Clips/s and CPU seconds per clip of each dataset through its own persistent DataLoader, rounds interleaved."""
    from torch.utils.data import DataLoader

    n = len(next(iter(datasets.values())))
    order = [i % n for i in range(clips)]
    loaders = {name: DataLoader(ds, batch_size=batch, sampler=order, num_workers=workers, persistent_workers=True,
                                prefetch_factor=2) for name, ds in datasets.items()}
    for loader in loaders.values():  # start the workers, warm up
        for _ in loader:
            pass
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    cpu = dict.fromkeys(loaders, 0.0)
    for r in range(rounds):
        for name in list(loaders) if r % 2 == 0 else list(loaders)[::-1]:
            c0, t0 = _tree_cpu_seconds(), time.perf_counter()
            for _ in loaders[name]:
                pass
            rates[name].append(clips / (time.perf_counter() - t0))
            cpu[name] += _tree_cpu_seconds() - c0
    del loaders
    return rates, {name: c / (rounds * clips) for name, c in cpu.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", help="folder with videos (searched recursively); default: generate")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--clips", type=int, default=12, help="clips per round and method")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--num-frames", type=int, default=32)
    parser.add_argument("--sampling-rate", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4, help="DataLoader batch (clips)")
    parser.add_argument("--workers", type=int, nargs="*", default=[2], help="DataLoader worker counts")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from gnvideo.data.annotations import VideoEntry
    from gnvideo.data.decode import open_sandboxed, open_video
    from gnvideo.data.kinetics import ClipDataset
    from gnvideo.data.layout import list_video_files
    from gnvideo.data.sampling import sample_generator, train_clip_indices
    from gnvideo.data.transforms import TrainTransform

    tmp = None
    if args.root:
        paths = sorted(list_video_files(args.root))[: args.num_videos]
    else:
        tmp = tempfile.TemporaryDirectory()
        print(f"writing {args.num_videos} videos (340x256, 300 frames, h264) to {tmp.name} ...", flush=True)
        paths = make_sources(tmp.name, args.num_videos)
    if not paths:
        raise SystemExit(f"no videos found under {args.root}")
    entries = [VideoEntry(p, 0) for p in paths]
    common = dict(num_frames=args.num_frames, sampling_rate=args.sampling_rate,
                  transform=TrainTransform(short_side_range=(256, 320), crop_size=224, upscale_on_device=True))
    datasets = {on: ClipDataset(entries, "train", ["x"], decode_sandbox=on, **common) for on in (False, True)}
    lengths = []
    for p in paths:
        with open_video(p) as r:
            lengths.append(r.frame_count)

    def read(opener, i: int) -> torch.Tensor:
        v = i % len(paths)
        idx = train_clip_indices(lengths[v], args.num_frames, args.sampling_rate, sample_generator(0, 0, i))
        with opener(paths[v]) as reader:
            return reader.frames_and_close(idx)

    methods = {
        "reader in-process": lambda i: read(open_video, i),
        "reader sandboxed": lambda i: read(open_sandboxed, i),
        "dataset in-process": lambda i: datasets[False][i % len(paths)],
        "dataset sandboxed": lambda i: datasets[True][i % len(paths)],
    }
    assert torch.equal(methods["reader in-process"](0), methods["reader sandboxed"](0))  # and warm-up
    for fn in methods.values():
        fn(0)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    cpu = dict.fromkeys(methods, 0.0)
    for r in range(args.rounds):
        spent = dict.fromkeys(methods, 0.0)
        for i in range(r * args.clips, (r + 1) * args.clips):
            names = list(methods)
            for name in names[i % len(names):] + names[: i % len(names)]:  # rotate the order: no position bias
                c0, t0 = cpu_seconds(), time.perf_counter()
                methods[name](i)
                spent[name] += time.perf_counter() - t0
                cpu[name] += cpu_seconds() - c0
        for name in methods:
            rates[name].append(args.clips / spent[name])
    result: dict = {"config": {**vars(args), "videos": len(paths), "cpu_count": os.cpu_count(), "torch_threads": 1},
                    "in_process": {}, "loader": {}}
    print(f"\nclip {args.num_frames}x{args.sampling_rate} of 340x256 h264 (or --root), {len(paths)} videos, "
          f"{args.rounds} rounds x {args.clips} clips, torch threads 1")
    print("one process:")
    print(f"{'method':<20}{'clips/s':>10}{'ms/clip':>10}{'sandboxed / in-process':>24}{'CPU ms/clip':>13}")
    n = args.rounds * args.clips
    for name, r in rates.items():
        med = statistics.median(r)
        base = statistics.median(rates[name.replace("sandboxed", "in-process")])
        result["in_process"][name] = {"clips_per_s": med, "ratio": med / base, "rounds": r,
                                      "cpu_ms_per_clip": 1e3 * cpu[name] / n}
        print(f"{name:<20}{med:>10.2f}{1e3 / med:>10.2f}{med / base:>23.3f}x{1e3 * cpu[name] / n:>13.2f}")
    for kind in ("reader", "dataset"):
        extra = 1e3 / statistics.median(rates[f"{kind} sandboxed"]) - 1e3 / statistics.median(
            rates[f"{kind} in-process"])
        extra_cpu = 1e3 * (cpu[f"{kind} sandboxed"] - cpu[f"{kind} in-process"]) / n
        result["in_process"][f"{kind} extra ms per clip"] = extra
        result["in_process"][f"{kind} extra CPU ms per clip"] = extra_cpu
        print(f"{kind}: {extra:+.2f} ms wall, {extra_cpu:+.2f} ms CPU per clip in the sandbox")

    if args.workers:
        print(f"DataLoader (batch {args.batch_size}, persistent workers, {args.clips} clips per round):")
        print(f"{'workers':<9}{'in-process clips/s':>20}{'sandboxed clips/s':>19}{'ratio':>8}"
              f"{'CPU ms/clip in-process':>24}{'sandboxed':>11}")
    for workers in args.workers:
        lr, lc = _loader_rates({"in-process": datasets[False], "sandboxed": datasets[True]}, workers, args.clips,
                               args.rounds, args.batch_size)
        off, on = statistics.median(lr["in-process"]), statistics.median(lr["sandboxed"])
        result["loader"][str(workers)] = {"in_process_clips_per_s": off, "sandboxed_clips_per_s": on,
                                          "ratio": on / off, "rounds": lr,
                                          "cpu_ms_per_clip": {k: 1e3 * v for k, v in lc.items()}}
        print(f"{workers:<9}{off:>20.2f}{on:>19.2f}{on / off:>7.3f}x{1e3 * lc['in-process']:>24.2f}"
              f"{1e3 * lc['sandboxed']:>11.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
