"""What a pixel-format converter kept for a whole video saves against PyAV's converter per frame.

PyAV's ``frame.to_ndarray(format=...)`` and ``frame.reformat(...)`` make a new swscale context for every frame. The
PyAV reader (:class:`gnvideo.data.decode.PyAVReader`: rotated videos, AVI files with B-frames, decord's failures) and
the prepare step (:func:`gnvideo.data.decode.transcode.transcode`: every video of ``gnvideo-prepare-kinetics``) keep
one ``VideoReformatter`` per reader / per video instead. Measured in the same run, rounds interleaved, CPU time
(``time.process_time``; PyAV runs in this process):

  reader   PyAVReader reading random 32x2 clips of Kinetics-like 340x256 videos, at full size and with
           ``short_side=128`` (scaled while converting)
  prepare  transcode of a 640x360 source to short side 256 (as ``gnvideo-prepare-kinetics`` writes it), upright and
           with 90-degree rotation metadata (turned while converting)
"per frame" is the same code with PyAV's converter per frame, as before this benchmark. Both give the same frames
(checked, the reader's bit for bit and the prepared files' decoded frames).

Usage: python benchmarks/bench_reformat.py [--clips 12] [--rounds 5] [--workdir DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_videos import make_sources, source_frames  # noqa: E402


class _PerFrame:
    """A stand-in ``VideoReformatter`` that converts through PyAV's converter per frame (the old code path)."""

    def reformat(self, frame, **kwargs):
        return frame.reformat(**kwargs)


@contextmanager
def per_frame_converters():
    """Within: gnvideo's decode code gets :class:`_PerFrame` where it asks for a ``VideoReformatter``."""
    import av.video.reformatter as module

    kept = module.VideoReformatter
    module.VideoReformatter = _PerFrame
    try:
        yield
    finally:
        module.VideoReformatter = kept


def _clips(paths: list[str], count: int, seed: int) -> list[tuple[str, list[int]]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(count):
        start = int(torch.randint(0, 300 - 64, (1,), generator=g))
        out.append((paths[k % len(paths)], list(range(start, start + 64, 2))))
    return out


def _read(clips, short_side):
    from gnvideo.data.decode import PyAVReader

    return [PyAVReader(path, short_side).frames(idx) for path, idx in clips]


def _prepare(src: str, folder: Path, tag: str) -> list[str]:
    from gnvideo.data.decode.transcode import transcode

    out = str(folder / f"{tag}_{Path(src).stem}.mp4")
    transcode(src, out, 0.0, None, short_side=256, threads=1)
    return [out]


def _cpu(fn, *args) -> tuple[float, object]:
    t0 = time.process_time()
    result = fn(*args)
    return time.process_time() - t0, result


def _decoded(path: str) -> torch.Tensor:
    from gnvideo.data.decode import PyAVReader

    reader = PyAVReader(path)
    return reader.frames(range(reader.frame_count))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12, help="reader clips per round and row")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", help="keep the generated videos here (default: a temp folder)")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from gnvideo.data.decode.writer import write_video

    folder = Path(args.workdir or tempfile.mkdtemp(prefix="bench_reformat_"))
    folder.mkdir(parents=True, exist_ok=True)
    videos = make_sources(folder / "sources", 4)
    sources = {}
    for rotation in (0, 90):
        path = folder / f"source640x360_rot{rotation}.mp4"
        if not path.is_file():
            write_video(path, source_frames(7, width=640, height=360, frames=150), fps=30, preset="veryfast", crf=18,
                        rotation=rotation)
        sources[rotation] = str(path)
    print(f"videos in {folder}")

    rows = {("reader", "full size"): lambda r: _read(_clips(videos, args.clips, r), None),
            ("reader", "short_side 128"): lambda r: _read(_clips(videos, args.clips, r), 128),
            ("prepare", "upright source"): lambda r: _prepare(sources[0], folder, f"r{r}"),
            ("prepare", "rotated source"): lambda r: _prepare(sources[90], folder, f"r{r}")}
    cpu = {key: {"kept": [], "per frame": []} for key in rows}
    same = {}
    for r in range(args.rounds):
        order = ["kept", "per frame"] if r % 2 == 0 else ["per frame", "kept"]
        for key, fn in rows.items():
            results = {}
            for way in order:
                if way == "per frame":
                    with per_frame_converters():
                        seconds, results[way] = _cpu(fn, r)
                else:
                    seconds, results[way] = _cpu(fn, r)
                cpu[key][way].append(seconds)
            if r == 0:
                a, b = results["kept"], results["per frame"]
                if key[0] == "prepare":
                    a, b = [_decoded(p) for p in a], [_decoded(p) for p in b]
                same[key] = all(torch.equal(x, y) for x, y in zip(a, b))
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    unit = {"reader": ("ms/clip", args.clips), "prepare": ("s/video", None)}
    print(f"\nCPU time, medians over {args.rounds} rounds ({args.clips} clips of 32x2 per reader round; one 5 s video "
          f"per prepare round)")
    print(f"{'row':32s} {'converter kept':>15s} {'per frame':>12s} {'kept / per frame':>17s}  same output")
    result = {"rows": {}}
    for key, ways in cpu.items():
        name, per = unit[key[0]]
        scale = 1000.0 / per if per else 1.0
        kept, old = (statistics.median(ways[w]) * scale for w in ("kept", "per frame"))
        ratio = statistics.median(k / o for k, o in zip(ways["kept"], ways["per frame"]))
        label = f"{key[0]}, {key[1]} ({name})"
        print(f"{label:32s} {kept:15.2f} {old:12.2f} {ratio:16.2f}x  {'yes' if same[key] else 'NO'}")
        result["rows"][label] = {"kept": kept, "per_frame": old, "ratio": ratio, "same_output": same[key]}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
