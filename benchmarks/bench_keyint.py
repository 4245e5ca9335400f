"""Speed against size of the prepared videos' encoder settings: the measurement behind prepare_kinetics' defaults.

The same sources (``bench_videos.py``) are encoded at short side 256 with preset veryfast, crf 23 and each setting
below; every file is then read at the same random clip positions with a fresh ``decord.VideoReader(num_threads=1)``
and one ``get_batch`` (32x2 and 64x1 clips), in one process, every setting reading clip i back to back (the order
rotating per clip), for ``--rounds`` rounds. Figures: total size against x264's default keyframe interval with CABAC
(the ``keyint 250, cabac`` row), and the median over rounds of the CPU time per clip (``time.process_time``;
other jobs on a shared machine disturb it less than wall time) against that row.

Settings: keyframe interval (x264 ``keyint``; 250 is x264's default) x entropy coding (CABAC, x264's default, or
CAVLC), plus two candidates for further savings: ``tune fastdecode`` (CAVLC, no deblocking filter, no weighted
prediction: the picture changes, not only the size), and "b1 nonref": one non-reference B-frame between references
(``bframes=1, b-pyramid=none, b-adapt=0, scenecut=0``) so that every even frame is a reference frame, read by PyAV
with ``skip_frame="NONREF"`` (the decoder skips the odd frames) for clips that start on an even frame; its decord row
reads the same even-start clips.

Usage: python benchmarks/bench_keyint.py [--num-videos 4] [--clips 16] [--rounds 3] [--json OUT] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_videos import make_sources  # noqa: E402

B1 = {"bframes": 1, "b-pyramid": "none", "b-adapt": 0, "scenecut": 0}
SETTINGS = {  # name -> (x264 params, other encoder options)
    **{f"keyint {k}, {e}": ({**({"keyint": k} if k != 250 else {}), **({"cabac": 0} if e == "cavlc" else {})}, {})
       for k in (250, 128, 64, 32, 16) for e in ("cabac", "cavlc")},
    "keyint 64, fastdecode": ({"keyint": 64}, {"tune": "fastdecode"}),
    "keyint 64, cavlc, b1 nonref": ({"keyint": 64, "cabac": 0, **B1}, {}),
}
BASE = "keyint 250, cabac"


def encode_all(sources: list[str], folder: Path) -> dict[str, list[str]]:
    import av

    from gnvideo.data.decode.writer import write_video

    out = {}
    decoded = []
    for src in sources:
        with av.open(src) as c:
            decoded.append([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    for name, (params, options) in SETTINGS.items():
        target = folder / name.replace(" ", "_").replace(",", "")
        target.mkdir(parents=True, exist_ok=True)
        out[name] = []
        for src, frames in zip(sources, decoded):
            path = target / Path(src).name
            if not path.is_file():
                write_video(path, frames, fps=30, preset="veryfast", crf=23, x264_params=params or None,
                            options=options or None)
            out[name].append(str(path))
    return out


def pyav_nonref_clip(path: str, indices: list[int], fps: float) -> np.ndarray:
    """Frames ``indices`` (all reference frames) decoded by PyAV with non-reference frames skipped."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        start = stream.start_time or 0
        per_frame = 1 / (fps * stream.time_base)
        container.seek(int(start + indices[0] * per_frame), stream=stream, backward=True, any_frame=False)
        wanted, got = set(indices), {}
        for frame in container.decode(stream):
            i = round((frame.pts - start) / per_frame)
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    if len(got) != len(wanted):
        raise RuntimeError(f"{path}: {len(wanted) - len(got)} wanted frames were not decoded")
    return np.stack([got[i] for i in indices])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--clips", type=int, default=16, help="clips per round and shape")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", help="keep the videos here (default: a temp folder)")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args(argv)

    import decord

    tmp = None if args.workdir else tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    t0 = time.perf_counter()
    files = encode_all(make_sources(work / "sources", args.num_videos), work / "keyint")
    print(f"{len(SETTINGS)} settings x {args.num_videos} videos encoded in {time.perf_counter() - t0:.0f} s",
          flush=True)
    n = args.num_videos
    frames = len(decord.VideoReader(files[BASE][0], num_threads=1))
    fps = float(decord.VideoReader(files[BASE][0], num_threads=1).get_avg_fps())
    rng = np.random.default_rng(0)
    result: dict = {"config": {**vars(args), "decord": decord.__version__}, "rows": {}}
    reads = {name: "decord" for name in SETTINGS}
    reads["keyint 64, cavlc, b1 nonref (PyAV NONREF)"] = "pyav"
    for shape in ("32x2", "64x1"):
        num_frames, rate = (int(x) for x in shape.split("x"))
        span = (num_frames - 1) * rate + 1
        starts = rng.integers(0, frames - span + 1, args.rounds * args.clips)
        even = [int(s) // 2 * 2 for s in starts]
        # skipping the non-reference (odd) frames only serves clips of even stride
        here = {name: how for name, how in reads.items() if how != "pyav" or rate % 2 == 0}
        times: dict[str, list[float]] = {name: [] for name in here}
        for r in range(args.rounds):
            spent = dict.fromkeys(here, 0.0)
            for k in range(r * args.clips, (r + 1) * args.clips):
                names = list(here)
                for name in names[k % len(names):] + names[: k % len(names)]:
                    setting = name.split(" (")[0]
                    b1 = "nonref" in setting
                    first = even[k] if b1 else int(starts[k])
                    indices = [first + j * rate for j in range(num_frames)]
                    path = files[setting][k % n]
                    c0 = time.process_time()
                    if here[name] == "pyav":
                        pyav_nonref_clip(path, indices, fps)
                    else:
                        decord.VideoReader(path, num_threads=1).get_batch(indices).asnumpy()
                    spent[name] += time.process_time() - c0
            for name in here:
                times[name].append(1e3 * spent[name] / args.clips)
        result["rows"][shape] = {name: {"cpu_ms_median": statistics.median(t), "cpu_ms": t}
                                 for name, t in times.items()}
    base_size = sum(os.path.getsize(p) for p in files[BASE])
    print(f"\n{args.num_videos} videos of {frames} frames, clips at the same positions, medians of {args.rounds} "
          f"rounds of {args.clips} clips; CPU ms per clip, ratio = {BASE!r} / row")
    print(f"{'setting':<44}{'size':>7}{'32x2 ms':>9}{'ratio':>7}{'64x1 ms':>9}{'ratio':>7}")
    for name in reads:
        setting = name.split(" (")[0]
        size = sum(os.path.getsize(p) for p in files[setting]) / base_size
        cells = ""
        for shape in ("32x2", "64x1"):
            if name in result["rows"][shape]:
                ms, base = result["rows"][shape][name]["cpu_ms_median"], result["rows"][shape][BASE]["cpu_ms_median"]
                cells += f"{ms:>9.1f}{base / ms:>6.2f}x"
            else:
                cells += f"{'n/a':>9}{'':>7}"
        result["rows"].setdefault("size", {})[name] = size
        print(f"{name:<44}{size:>6.2f}x{cells}")
    print("(b1 nonref rows read clips that start on an even frame, the others clips starting anywhere; skipping the "
          "odd frames serves no 64x1 clip)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
