"""Training clips and test views per second: gnvideo's prepared videos and loader against the peers' data prep.

The same source videos (``bench_videos.py``: Kinetics-like, 10 s, 340x256) are prepared twice, as the peers' prep
scripts write them ("x264-default": ffmpeg's libx264 defaults, keyframes 250 frames apart) and as
``gnvideo-prepare-kinetics`` writes them ("gnvideo"), and read at the same clip positions by:

  raw decord         a fresh ``decord.VideoReader(num_threads=1)`` and one ``get_batch`` of the clip's frames
  gnvideo dataset    ``ClipDataset`` (what ``KineticsDataModule`` builds): train mode = open, decode, uint8 crop
                     (crops that need enlarging leave at source resolution, as on a GPU trainer, unless
                     ``--resize-in-worker``); test mode = the 10 clips x 3 crops of a video from one decoder and
                     one read of the union of their frames; rows "decode_sandbox off" and "data.backend pyav" (the
                     PyAV reader instead of decord, in the decode sandbox) beside the default
  pytorchvideo       ``pytorchvideo.data.Kinetics(..., decoder="decord")`` with a clip sampler that returns these
                     positions; it decodes every frame of the clip's time span (64 for 32x2), then the transform
                     subsamples ``num_frames`` and crops 224 (test: 3 crops per clip, each clip decoded once)

"raw decord, 10 clips one by one" reads a video's 10 test clips as 10 training-style reads (a fresh reader each, no
crops), "10x3 views from 10 clips read one by one" makes the dataset's 30 views that way: the two baselines of the
test-view target. The dataset's test item (as on a GPU trainer: ``EvalTransform(views_on_device=True)``) is the
union of the clips' frames, each once, and where the 30 views lie in it; the trainer cuts the views on its device.
"views cut in the worker" is the item of a CPU trainer (the 30 uint8 views, written by the worker; before issue 21's
last change, every trainer's), "union read only" the read without any copy. A last table times the device-side step
of both forms here, on the CPU.

Each table is measured twice: every row as a dataset in its own DataLoader with 1 persistent worker process (the
per-core figure; rounds interleaved, the rows' order rotating each round, the same items every round), then in this
process without a DataLoader, every row doing item i back to back with the others. Two figures per row, medians
over rounds: items per second of wall time, and CPU time per item (``time.process_time`` around each item and the
batch's collate, in the worker, all its threads included, plus its decode child's), which other jobs on a shared
machine disturb much less.
Ratios are medians over rounds of the ratio within each round. README, "Data loading", has the targets and the latest
figures.

Usage: python benchmarks/bench_loader.py [--num-videos 4] [--clips 8] [--test-videos 2] [--rounds 5] [--json OUT]
       [--sources DIR] [--workdir DIR] [--gpu-step-json bench_train_step.json]
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_videos import make_sources, prepare_both  # noqa: E402
from cpu_time import cpu_seconds  # noqa: E402

CROP = 224
PYAV_TRAIN = "the same, data.backend pyav"
PTV_TRAIN = "pytorchvideo Kinetics (decord), x264-default files"
PTV_TEST = "pytorchvideo Kinetics (decord, 10x3 views), x264-default files"
#: (faster row, slower row) -> the ratio issue 21 asks for
TARGETS = {"vs_peers": 1.7, "vs_own_raw": 1.0, "one_by_one": 2.0}


def _frames_tensor(batch) -> torch.Tensor:
    """decord's batch as a tensor (its torch bridge, which importing pytorchvideo sets, already gives one)."""
    return batch if isinstance(batch, torch.Tensor) else torch.from_numpy(batch.asnumpy())


class Timed(Dataset):
    """``(item, worker CPU seconds)`` of ``inner[i]``."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        t0 = cpu_seconds()
        item = self.inner[i]
        return item, cpu_seconds() - t0


class TimedIterable(IterableDataset):
    """``(item, worker CPU seconds since the previous item)`` of an iterable dataset."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __iter__(self):
        t0 = cpu_seconds()
        for item in self.inner:
            t1 = cpu_seconds()
            yield item, t1 - t0
            t0 = cpu_seconds()


class RawClips(Dataset):
    """Item i: a fresh decord reader and one ``get_batch`` of ``clips[i]`` = (path, frame indices)."""

    def __init__(self, clips: list[tuple[str, list[int]]]) -> None:
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        import decord

        path, indices = self.clips[i]
        return _frames_tensor(decord.VideoReader(path, num_threads=1).get_batch(indices))


class RawOneByOne(Dataset):
    """Item v: the test clips of video v read one by one, each with a fresh decord reader: (clips, T, H, W, 3)."""

    def __init__(self, videos: list[tuple[str, list[list[int]]]]) -> None:
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, v: int) -> torch.Tensor:
        import decord

        path, clips = self.videos[v]
        return torch.stack([_frames_tensor(decord.VideoReader(path, num_threads=1).get_batch(c)) for c in clips])


class UnionRead(Dataset):
    """Item v: one reader and one read of the union of the test clips' frames, no views (U, H, W, 3): what the
    worker would be left with if the views were cut on the device."""

    def __init__(self, videos: list[tuple[str, list[list[int]]]]) -> None:
        self.videos = videos

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, v: int) -> torch.Tensor:
        from gnvideo.data.decode import open_video

        path, clips = self.videos[v]
        with open_video(path) as reader:
            return reader.frames(sorted({i for clip in clips for i in clip}))


class OneByOneViews(Dataset):
    """Item v: the same test views as the dataset's test item (``transform``'s crops of each clip), each clip read
    with its own reader (``gnvideo.data.decode.open_video``), as a loader without the union read would."""

    def __init__(self, videos: list[tuple[str, list[list[int]]]], transform) -> None:
        self.videos, self.transform = videos, transform

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, v: int) -> torch.Tensor:
        from gnvideo.data.decode import open_video

        path, clips = self.videos[v]
        views = []
        for clip in clips:
            with open_video(path) as reader:
                views += self.transform(reader.frames(clip))
        out = torch.empty((len(views), *views[0].shape), dtype=torch.uint8)
        for k, view in enumerate(views):
            out[k].copy_(view)
        return out


def pytorchvideo_dataset(list_file: str, starts: dict[int, list[int]], span: int, fps: float, num_frames: int,
                         augs: int):
    """``pytorchvideo.data.Kinetics`` (decord decoder) over ``list_file`` ("path label" lines, the label an item id)
    whose clip sampler returns, for item ``label``, the clips starting at frames ``starts[label]`` (``span`` frames
    each), ``augs`` crops per clip; the transform subsamples ``num_frames`` and crops (left/centre/right by aug)."""
    from pytorchvideo.data import Kinetics
    from pytorchvideo.data.clip_sampling import ClipInfo, ClipSampler

    class FixedClips(ClipSampler):
        def __init__(self) -> None:
            super().__init__(span / fps)
            self.reset()

        def reset(self) -> None:
            self.k = 0

        def __call__(self, last_clip_time, video_duration, annotation):
            clip, aug = divmod(self.k, augs)
            s = starts[annotation["label"]][clip]
            self.k += 1
            last = self.k == len(starts[annotation["label"]]) * augs
            # pytorchvideo's decord reader takes frames ceil(fps * t) for t in [start, end): a quarter frame early
            return ClipInfo((s - 0.25) / fps, (s + span - 0.25) / fps, clip, aug, last)

    def transform(sample: dict) -> dict:
        video = sample["video"]  # float32 (C, T, H, W), as pytorchvideo's decoder gives it
        keep = torch.linspace(0, video.shape[1] - 1, num_frames).long()
        video = video.index_select(1, keep)
        h, w = video.shape[-2:]
        y0 = (h - CROP) // 2
        x0 = [0, (w - CROP) // 2, w - CROP][sample["aug_index"] % 3] if augs > 1 else (w - CROP) // 2
        return {"video": video[..., y0:y0 + CROP, x0:x0 + CROP].contiguous(), "label": sample["label"]}

    return Kinetics(list_file, FixedClips(), video_sampler=torch.utils.data.SequentialSampler, transform=transform,
                    decode_audio=False, decoder="decord")


def _torch_bridge(worker_id: int) -> None:
    """pytorchvideo's decord reader needs decord's torch bridge (its import sets it; the other rows run without)."""
    import decord

    decord.bridge.set_bridge("torch")


def _loader(dataset, batch_size: int, pytorchvideo: bool = False, views: bool = False) -> DataLoader:
    collate = functools.partial(_collate, views=views)
    return DataLoader(dataset, batch_size=batch_size, num_workers=1, persistent_workers=True, prefetch_factor=2,
                      collate_fn=collate, worker_init_fn=_torch_bridge if pytorchvideo else None)


def _collate(items, views: bool = False):
    """Items are (sample, CPU seconds): the samples collated as their loader would (torch's default collate, which
    stacks into shared memory in a worker; ``collate_views`` for gnvideo's test items), the CPU time of the items and
    of this collate summed: all the worker spends on the batch."""
    from torch.utils.data import default_collate

    from gnvideo.data.collate import collate_views

    samples = [s for s, _ in items]
    c0 = cpu_seconds()
    batch = (collate_views if views else default_collate)(samples)
    return batch, sum(c for _, c in items) + cpu_seconds() - c0, len(items)


def measure(rows: dict[str, tuple[DataLoader, int]], rounds: int) -> dict[str, dict]:
    """Per row (a loader and the items that make one unit: a clip, or a video's views): units per second (wall) and
    CPU ms per unit, one value per round; rounds interleaved."""
    out = {name: {"per_s": [], "cpu_ms": []} for name in rows}
    for loader, _ in rows.values():  # start the worker, warm up (imports, page cache)
        for _ in loader:
            pass
    names = list(rows)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            loader, per_unit = rows[name]
            t0, cpu, count = time.perf_counter(), 0.0, 0
            for _, seconds, n in loader:
                cpu += seconds
                count += n
            wall = time.perf_counter() - t0
            out[name]["per_s"].append(count / per_unit / wall)
            out[name]["cpu_ms"].append(1e3 * cpu / (count / per_unit))
    for stats in out.values():
        stats["per_s_median"] = statistics.median(stats["per_s"])
        stats["cpu_ms_median"] = statistics.median(stats["cpu_ms"])
    return out


class NextOf:
    """Calls of an iterable dataset for the in-process table: ``per_call`` items of it (one clip, or one video's
    views), starting again at its first item when it ends; decord's torch bridge on while pytorchvideo reads."""

    def __init__(self, dataset, per_call: int = 1) -> None:
        self.dataset, self.per_call, self.it = dataset, per_call, None

    def __call__(self, i: int) -> None:
        import decord

        decord.bridge.set_bridge("torch")
        try:
            for _ in range(self.per_call):
                try:
                    next(self.it)
                except (StopIteration, TypeError):  # ended, or not started
                    self.it = iter(self.dataset)
                    next(self.it)
        finally:
            decord.bridge.set_bridge("native")


def measure_in_process(rows: dict, items: int, rounds: int) -> dict[str, dict]:
    """Per row (a callable of the item index): units per second (wall) and CPU ms per unit, one value per round;
    every row does item i back to back with the others (the order rotating per item), so load changes hit all
    rows alike."""
    for fn in rows.values():  # warm up
        fn(0)
    out = {name: {"per_s": [], "cpu_ms": []} for name in rows}
    names = list(rows)
    for _ in range(rounds):
        wall, cpu = dict.fromkeys(rows, 0.0), dict.fromkeys(rows, 0.0)
        for i in range(items):
            for name in names[i % len(names):] + names[: i % len(names)]:
                t0, c0 = time.perf_counter(), cpu_seconds()
                rows[name](i)
                wall[name] += time.perf_counter() - t0
                cpu[name] += cpu_seconds() - c0
        for name in rows:
            out[name]["per_s"].append(items / wall[name])
            out[name]["cpu_ms"].append(1e3 * cpu[name] / items)
    for stats in out.values():
        stats["per_s_median"] = statistics.median(stats["per_s"])
        stats["cpu_ms_median"] = statistics.median(stats["cpu_ms"])
    return out


def measure_device_step(dataset, items: int, rounds: int) -> dict[str, dict]:
    """The model-side step of a test batch of each of ``items`` videos, timed in this process: the views cut from the
    batch's frames and normalised in one pass (``BatchTransform.views``, what the trainer runs now) against
    normalising the uint8 views a worker cut (``BatchTransform`` on them, what it ran before); views interleaved."""
    from gnvideo.data.collate import collate_views, views_of
    from gnvideo.data.transforms import BatchTransform

    transform = BatchTransform()
    batches = [collate_views([dataset[i]]) for i in range(items)]
    views = [views_of(b) for b in batches]
    rows = {"views cut from the frames and normalised (now)":
            lambda i: transform.views(batches[i]["frames"], batches[i]["view_rows"], batches[i]["view_boxes"],
                                      batches[i]["view_size"]),
            "uint8 views from the worker normalised (before)": lambda i: transform(views[i])}
    return measure_in_process(rows, items, rounds)


def print_table(title: str, stats: dict[str, dict], unit: str) -> None:
    first = next(iter(stats))
    print(f"\n{title}")
    print(f"{'row':<60}{unit + '/s':>9}{'CPU ms/' + unit:>14}{'vs first row: wall':>20}{'CPU':>7}")
    for name, s in stats.items():
        r = ratio(stats, name, first)
        s["vs_first_wall"], s["vs_first_cpu"] = r["wall"], r["cpu"]
        print(f"{name:<60}{s['per_s_median']:>9.2f}{s['cpu_ms_median']:>14.1f}{r['wall']:>19.2f}x{r['cpu']:>6.2f}x")


def ratio(stats: dict, faster: str, slower: str) -> dict[str, float]:
    """How many times ``faster`` beats ``slower``, by wall-clock rate and by CPU time per unit: the median over
    rounds of the ratio within each round (the rows of a round ran side by side)."""
    a, b = stats[faster], stats[slower]
    return {"wall": statistics.median(x / y for x, y in zip(a["per_s"], b["per_s"])),
            "cpu": statistics.median(y / x for x, y in zip(a["cpu_ms"], b["cpu_ms"]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--clips", type=int, default=8, help="training clips per round and row (a multiple of "
                        "--batch-size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4, help="training clips per DataLoader batch")
    parser.add_argument("--shapes", nargs="+", default=["32x2", "64x1"], help="training clips, FRAMESxSTRIDE")
    parser.add_argument("--test-videos", type=int, default=2, help="videos per round for the test views")
    parser.add_argument("--sources", help="folder of source videos to use instead of generated ones")
    parser.add_argument("--workdir", help="keep the generated and prepared videos here (default: a temp folder)")
    parser.add_argument("--no-pytorchvideo", action="store_true", help="skip the pytorchvideo rows")
    parser.add_argument("--resize-in-worker", action="store_true",
                        help="enlarge training crops in the worker (the DataModule's choice on a CPU trainer) instead "
                             "of on the device (its choice on a GPU)")
    parser.add_argument("--gpu-step-json", help="bench_train_step.py --json output of a GPU: its clips/s give the "
                        "CPU cores one GPU needs")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import decord

    from gnvideo.data.annotations import VideoEntry
    from gnvideo.data.kinetics import ClipDataset
    from gnvideo.data.layout import list_video_files
    from gnvideo.data.random_access import inspect_video
    from gnvideo.data.sampling import clip_span, eval_clip_indices, sample_generator, train_clip_indices
    from gnvideo.data.transforms import EvalTransform, TrainTransform

    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    t0 = time.perf_counter()
    if args.sources:
        sources = list_video_files(args.sources)[: args.num_videos]
    else:
        sources = make_sources(work / "sources", args.num_videos)
    files = prepare_both(sources, work / "prepared")
    print(f"{len(sources)} sources prepared two ways in {time.perf_counter() - t0:.0f} s ({work})", flush=True)

    pytorchvideo_error = None
    if not args.no_pytorchvideo:
        try:
            import pytorchvideo.data  # noqa: F401

            decord.bridge.set_bridge("native")  # the import set the torch bridge process-wide; only its rows use it
        except Exception as err:  # noqa: BLE001 - any import failure just drops its rows
            pytorchvideo_error = f"{type(err).__name__}: {err}"
            print(f"pytorchvideo rows skipped: {pytorchvideo_error}")
    with_ptv = not args.no_pytorchvideo and pytorchvideo_error is None

    info = {}
    for name, paths in files.items():
        facts = [inspect_video(p, 32, 2) for p in paths]
        info[name] = {"bytes": sum(os.path.getsize(p) for p in paths),
                      "max_interval": [f["max_interval"] for f in facts],
                      "encoder": facts[0].get("encoder"),
                      "frames_decoded_32x2": statistics.fmean(f["frames_decoded"] for f in facts)}
    lengths = {name: [len(decord.VideoReader(p, num_threads=1)) for p in paths] for name, paths in files.items()}
    if lengths["gnvideo"] != lengths["x264-default"]:
        raise SystemExit(f"the two preps differ in frame counts: {lengths}")
    frame_counts = lengths["gnvideo"]
    fps = float(decord.VideoReader(files["gnvideo"][0], num_threads=1).get_avg_fps())
    base_size = info["x264-default"]["bytes"]
    print(f"{'files':<14}{'MB':>8}{'size':>7}  longest keyframe interval  frames decoded per 32x2 clip  x264")
    for name, i in info.items():
        enc = i["encoder"] or {}
        print(f"{name:<14}{i['bytes'] / 1e6:>8.2f}{i['bytes'] / base_size:>6.2f}x  {str(i['max_interval']):<26} "
              f"{i['frames_decoded_32x2']:>6.1f}                      keyint={enc.get('keyint')} "
              f"cabac={enc.get('cabac')} bframes={enc.get('bframes')} ({enc.get('encoder')})")

    n_videos = len(sources)
    result = {"config": {**vars(args), "videos": n_videos, "decord": decord.__version__, "cpu_count": os.cpu_count(),
                         "pytorchvideo": None if with_ptv else pytorchvideo_error or "skipped"},
              "files": info, "train": {}, "test": {}, "targets": {}}
    entries = [VideoEntry(files["gnvideo"][i % n_videos], 0) for i in range(args.clips)]
    per_core = {}
    for shape in args.shapes:
        num_frames, rate = (int(x) for x in shape.split("x"))
        span = clip_span(num_frames, rate)
        # the dataset draws item i's clip from (seed 0, epoch 0, i): every row reads those frames
        indices = [train_clip_indices(frame_counts[i % n_videos], num_frames, rate, sample_generator(0, 0, i))
                   for i in range(args.clips)]
        rows = {
            "raw decord, x264-default files": RawClips([(files["x264-default"][i % n_videos], idx)
                                                        for i, idx in enumerate(indices)]),
            "raw decord, gnvideo files": RawClips([(files["gnvideo"][i % n_videos], idx)
                                                   for i, idx in enumerate(indices)]),
            "gnvideo dataset (train), gnvideo files": ClipDataset(
                entries, "train", ["x"], num_frames=num_frames, sampling_rate=rate,
                transform=TrainTransform(crop_size=CROP, upscale_on_device=not args.resize_in_worker)),
            "the same, decode_sandbox off": ClipDataset(
                entries, "train", ["x"], num_frames=num_frames, sampling_rate=rate, decode_sandbox=False,
                transform=TrainTransform(crop_size=CROP, upscale_on_device=not args.resize_in_worker)),
            PYAV_TRAIN: ClipDataset(
                entries, "train", ["x"], num_frames=num_frames, sampling_rate=rate, backend="pyav",
                transform=TrainTransform(crop_size=CROP, upscale_on_device=not args.resize_in_worker)),
        }
        gc.collect()  # no garbage decoder of an earlier section may reach the forked workers
        loaders = {name: (_loader(Timed(ds), args.batch_size), 1) for name, ds in rows.items()}
        calls = {name: ds.__getitem__ for name, ds in rows.items()}
        if with_ptv:
            list_file = work / f"ptv_train_{shape}.txt"
            list_file.write_text("".join(f"{files['x264-default'][i % n_videos]} {i}\n" for i in range(args.clips)))
            ptv = pytorchvideo_dataset(str(list_file), {i: [idx[0]] for i, idx in enumerate(indices)},
                                       num_frames * rate, fps, num_frames, augs=1)
            loaders[PTV_TRAIN] = (_loader(TimedIterable(ptv), args.batch_size, pytorchvideo=True), 1)
            calls[PTV_TRAIN] = NextOf(ptv)
        print(f"\nmeasuring {shape} training clips (span {span} frames) ...", flush=True)
        stats = measure(loaders, args.rounds)
        del loaders
        print_table(f"training clips {shape}: {args.clips} clips per round, {args.rounds} rounds, 1 worker per row, "
                    f"batch {args.batch_size}", stats, "clip")
        local = measure_in_process(calls, args.clips, args.rounds)
        print_table("the same in one process (no DataLoader; clip-level interleaving)", local, "clip")
        result["train"][shape] = {"loader": stats, "in_process": local}
        ours = "gnvideo dataset (train), gnvideo files"
        for where, table in (("", stats), ("in_process_", local)):
            result["targets"][f"{where}train_{shape}_vs_peers"] = ratio(table, ours, "raw decord, x264-default files")
            result["targets"][f"{where}train_{shape}_vs_own_raw"] = ratio(table, ours, "raw decord, gnvideo files")
            result["targets"][f"{where}train_{shape}_backend_pyav_vs_peers"] = ratio(
                table, PYAV_TRAIN, "raw decord, x264-default files")
            result["targets"][f"{where}train_{shape}_backend_pyav_vs_own_raw"] = ratio(
                table, PYAV_TRAIN, "raw decord, gnvideo files")
        per_core[shape] = 1e3 / stats[ours]["cpu_ms_median"]

    test_videos = args.test_videos
    clips10 = [eval_clip_indices(frame_counts[v % n_videos], 32, 2, 10) for v in range(test_videos)]
    test_transform = EvalTransform(short_side=256, crop_size=CROP, num_crops=3, views_on_device=True)
    ours_test = "gnvideo dataset (test, 10x3 views), gnvideo files"
    rows = {
        "raw decord, 10 clips one by one, gnvideo files": RawOneByOne(
            [(files["gnvideo"][v % n_videos], c) for v, c in enumerate(clips10)]),
        "10x3 views from 10 clips read one by one, gnvideo files": OneByOneViews(
            [(files["gnvideo"][v % n_videos], c) for v, c in enumerate(clips10)], test_transform),
        "raw decord, 10 clips one by one, x264-default files": RawOneByOne(
            [(files["x264-default"][v % n_videos], c) for v, c in enumerate(clips10)]),
        ours_test: ClipDataset(
            [VideoEntry(files["gnvideo"][v % n_videos], 0) for v in range(test_videos)], "test", ["x"],
            num_frames=32, sampling_rate=2, num_clips=10, transform=test_transform),
    }
    in_worker = "gnvideo dataset, views cut in the worker, gnvideo files"
    rows[in_worker] = ClipDataset(
        [VideoEntry(files["gnvideo"][v % n_videos], 0) for v in range(test_videos)], "test", ["x"],
        num_frames=32, sampling_rate=2, num_clips=10, transform=copy.copy(test_transform))
    rows[in_worker].transform.views_on_device = False
    rows["gnvideo union read only (no views), gnvideo files"] = UnionRead(
        [(files["gnvideo"][v % n_videos], c) for v, c in enumerate(clips10)])
    calls = None
    gc.collect()
    loaders = {name: (_loader(Timed(ds), 1, views=name in (ours_test, in_worker)), 1) for name, ds in rows.items()}
    calls = {name: ds.__getitem__ for name, ds in rows.items()}
    if with_ptv:
        list_file = work / "ptv_test.txt"
        list_file.write_text("".join(f"{files['x264-default'][v % n_videos]} {v}\n" for v in range(test_videos)))
        ptv = pytorchvideo_dataset(str(list_file), {v: [c[0] for c in clips] for v, clips in enumerate(clips10)},
                                   64, fps, 32, augs=3)
        loaders[PTV_TEST] = (_loader(TimedIterable(ptv), 1, pytorchvideo=True), 30)
        calls[PTV_TEST] = NextOf(ptv, 30)
    print("\nmeasuring the 10x3 test views of a video ...", flush=True)
    stats = measure(loaders, args.rounds)
    del loaders
    print_table(f"test views, 10 clips 32x2 x 3 crops per video: {test_videos} videos per round, {args.rounds} "
                "rounds, 1 worker per row", stats, "video")
    local = measure_in_process(calls, test_videos, args.rounds)
    print_table("the same in one process (no DataLoader; video-level interleaving)", local, "video")
    result["test"]["10x3"] = {"loader": stats, "in_process": local}
    for where, table in (("", stats), ("in_process_", local)):
        result["targets"][f"{where}test_vs_raw_one_by_one"] = ratio(
            table, ours_test, "raw decord, 10 clips one by one, gnvideo files")
        result["targets"][f"{where}test_vs_views_one_by_one"] = ratio(
            table, ours_test, "10x3 views from 10 clips read one by one, gnvideo files")
    device = measure_device_step(rows[ours_test], test_videos, args.rounds)
    print_table("the device-side step of a test batch, here on this CPU (1 thread; the same float32 output, "
                "(30, 3, 32, 224, 224) per video)", device, "video")
    result["test"]["device_step_cpu"] = device

    print("\ntargets (ratios measured in this run, medians of the per-round ratios; wall clock / CPU time; 1 worker "
          "unless in_process):")
    for key, r in result["targets"].items():
        goal = next(g for suffix, g in TARGETS.items() if key.endswith(suffix))
        r["target"] = goal
        met = "met" if min(r["wall"], r["cpu"]) >= goal else "met by one measure" if max(r["wall"], r["cpu"]) >= goal \
            else "missed"
        print(f"  {key:<50} {r['wall']:.2f}x / {r['cpu']:.2f}x   target >= {goal}x: {met}")

    gpu = None
    if args.gpu_step_json:
        data = json.loads(Path(args.gpu_step_json).read_text())
        gpu = {row["variant"]: 1e3 * data["args"]["clips"] / row["step_ms_median"] for row in data["rows"]}
    print("\nCPU cores per GPU (one worker = one core; clips/s per core = 1 / the dataset's CPU time per clip):")
    for shape, rate in per_core.items():
        need = "; ".join(f"{v}: {g:.0f} clips/s -> {g / rate:.1f} cores" for v, g in gpu.items()) if gpu else \
            "GPU clips/s not measured"
        print(f"  {shape}: {rate:.1f} clips/s per core; {need}")
    result["cores_per_gpu"] = {"clips_per_s_per_core": per_core, "gpu_clips_per_s": gpu}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
