#!/usr/bin/env python
"""Trim, resize and re-encode already-downloaded Kinetics videos into the layout gnvideo reads.

Input: the official annotation CSV(s) (columns ``label,youtube_id,time_start,time_end,split``) and a directory with
the raw downloads, named ``<youtube_id>.<ext>`` (full videos: the clip is cut at [time_start, time_end]) or
``<youtube_id>_<start>_<end>.<ext>`` (already trimmed: the whole file is used), searched recursively.

Output (``--out``)::

    <split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4   h264/yuv420p, short side --short-side, no audio
    annotations/<split>.csv                                     rows for the clips that exist (official columns)
    labels.txt                                                  the --labels class names, when given
    prepare_report.json                                         missing and broken sources, counts

Every row is checked before anything is encoded, with the dataset's rules (``gnvideo.data.layout``): whole,
non-negative seconds with time_start < time_end, and a label among the class names (``--labels``). Sources are
broken by the rule of ``gnvideo.data.validation`` and reported with check_videos' reason. Output frames are upright
(rotation metadata applied) and are the source frames at the source's rate, none repeated or dropped.

Resumable: finished outputs are skipped; each output is written to a hidden temp file and renamed. Never touches the
network. Example::

    python data_prep/prepare_kinetics.py --csv kinetics400/train.csv kinetics400/validate.csv \
        --videos raw_videos/ --out data/kinetics400 --workers 16
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gnvideo.data.annotations import load_label_names  # noqa: E402
from gnvideo.data.layout import (  # noqa: E402
    clip_filename,
    clip_stem,
    index_video_files,
    read_annotation_csv,
    split_from_file_name,
    split_name,
    write_annotation_csv,
    write_text_atomic,
)
from gnvideo.data.video_writer import VideoWriter, partial_path  # noqa: E402


@dataclass(frozen=True)
class Clip:
    """One annotation row. ``csv_file``/``line`` locate it for error messages."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str
    csv_file: str
    line: int

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.label}/{clip_filename(self.youtube_id, self.time_start, self.time_end)}"


def read_official_csv(path: str | os.PathLike, default_split: str | None = None,
                      label_names: list[str] | None = None) -> list[Clip]:
    """Parse an official Kinetics CSV with the dataset's rules (``gnvideo.data.layout.read_annotation_csv``).

    Args:
        path: CSV with a header containing ``label,youtube_id,time_start,time_end`` and optionally ``split``.
        default_split: split for files without a ``split`` column (else taken from the file name).
        label_names: class names every label must be one of (None = any label).

    Raises:
        FileNotFoundError: missing file.
        ValueError: missing columns, a malformed row, bad times, an unknown label or split; the message names the
            file and line.
    """
    rows = read_annotation_csv(path, label_names)
    fallback = default_split or split_from_file_name(path)
    clips = []
    for row in rows:
        if not (row.split or fallback):
            raise ValueError(f"{path}: no split column and no split in the file name; pass --split")
        try:
            split = split_name(row.split or fallback)
        except ValueError as e:
            raise ValueError(f"{path}:{row.line}: malformed row, {e}") from None
        clips.append(Clip(row.label, row.youtube_id, row.time_start, row.time_end, split, str(path), row.line))
    return clips


def find_source(index: dict[str, str], clip: Clip) -> tuple[str | None, bool]:
    """Return ``(path, trimmed)``: the raw file for a clip and whether it already holds only the clip."""
    for stem in (clip_stem(clip.youtube_id, clip.time_start, clip.time_end),
                 f"{clip.youtube_id}_{clip.time_start}_{clip.time_end}"):
        if stem in index:
            return index[stem], True
    return index.get(clip.youtube_id), False


def transcode(src: str | os.PathLike, dst: str | os.PathLike, start: float, end: float, short_side: int = 256,
              upscale: bool = True, crf: int = 23, preset: str = "veryfast", threads: int = 1) -> int:
    """Cut ``[start, end)`` seconds of ``src``, turn it upright, resize to short side ``short_side``, encode h264.

    The output has a constant frame rate equal to the source's average rate; output frame ``j`` (at ``start + j /
    rate``) is the source frame on screen at that time, rounded to the nearest frame, so a constant-rate source gives
    each of its frames exactly once (also with millisecond timestamps, as in MKV, and for AVI files whose packet
    times are in decode order, which are numbered by counting). Variable-rate sources are resampled. Rotation metadata
    is applied to the pixels (the output has none). Audio is dropped. Written to a hidden temp file and renamed.

    Returns:
        Number of frames written.

    Raises:
        VideoDecodeError: the source is broken by the rule of ``gnvideo.data.validation`` (a decode error, or
            truncated), has no video stream, or has no frame in the interval; ``reason`` is the check_videos text.
    """
    import av

    from gnvideo.data.validation import VideoDecodeError, check_file, ffmpeg_message

    src, dst = str(src), Path(dst)
    check_file(src)
    try:
        inp = av.open(src)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"cannot open: {ffmpeg_message(err)}", src) from err
    with inp:
        if not inp.streams.video:
            raise VideoDecodeError("no video stream", src)
        ist = inp.streams.video[0]
        ist.thread_type = "AUTO"
        rate = ist.average_rate or ist.guessed_rate or Fraction(30)
        if not 1 <= rate <= 240:
            rate = Fraction(30)
        step = 1 / float(rate)
        count_frames = inp.format.name == "avi" and bool(ist.codec_context.has_b_frames)
        t0 = float(ist.start_time * ist.time_base) if ist.start_time is not None and ist.time_base else 0.0
        if start > 0 and not count_frames:
            inp.seek(int((start + t0) / ist.time_base), stream=ist, backward=True, any_frame=False)
        n_out = max(1, round((end - start) * float(rate)))

        def slot(t: float) -> int:  # the output frame whose time is nearest to t
            return math.floor((t - start) / step + 0.5)

        out: VideoWriter | None = None
        rotation = 0

        def emit(frame, until: int) -> None:
            converted = None
            while out.frames_written < min(until, n_out):
                if converted is None:  # convert lazily: frames before the cut point are never converted
                    converted = _upright(frame, *out.size, rotation)
                out.write(converted)

        try:
            prev, prev_t, t, decoded = None, None, None, 0
            for k, frame, t in _timed_frames(inp, ist, src, step, t0, count_frames):
                decoded = k + 1
                if prev_t is not None and t <= prev_t:  # never back in time (decode-order timestamps)
                    t = prev_t + step
                if out is None:
                    rotation = int(round(frame.rotation or 0)) % 360
                    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
                    w, h = _target_size(w, h, short_side, upscale)
                    out = VideoWriter(dst, rate, width=w, height=h, crf=crf, preset=preset, threads=threads)
                s = slot(t)
                if prev is not None:
                    emit(prev, s)  # the previous frame stays on screen until this one starts
                elif s > 0:
                    emit(frame, s)  # nothing decoded before the cut point: hold the first frame
                if s >= n_out:
                    break
                prev, prev_t = frame, t
            else:
                if prev is not None:
                    emit(prev, slot(prev_t) + 1)
                    _check_not_truncated(ist, src, prev_t, rate, decoded if count_frames or start <= 0 else None)
            if out is None or out.frames_written == 0:
                raise VideoDecodeError(f"no frames in [{start}, {end}] s", src)
        except BaseException:
            if out is not None:
                out.abort()
            raise
        out.close()
    return out.frames_written


def _timed_frames(inp, ist, src: str, step: float, t0: float, count_frames: bool):
    """``(k, frame, t)``: decoded frames with their time in seconds from the stream start (frame count x step when
    ``count_frames``); a decode error raises the check_videos verdict."""
    import av

    from gnvideo.data.validation import VideoDecodeError, decode_error_reason, ffmpeg_message

    k, t = -1, None
    demux = inp.demux(ist)
    while True:
        try:
            packet = next(demux)
            frames = packet.decode()
        except StopIteration:
            return
        except av.error.FFmpegError as err:
            if k < 0:
                raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", src) from err
            at = k + 1 if count_frames or t is None else round(t / step) + 1
            raise VideoDecodeError(decode_error_reason(at, err), src) from err
        for frame in frames:
            k += 1
            if count_frames or frame.time is None:
                t = k * step if count_frames or t is None else t + step
            else:
                t = frame.time - t0
            yield k, frame, t


def _check_not_truncated(ist, src: str, last_time: float, rate: Fraction, decoded: int | None) -> None:
    """The source ended: raise the check_videos verdict when it holds clearly fewer frames than announced."""
    from gnvideo.data.validation import VideoDecodeError, truncation_reason

    announced = int(ist.frames or 0)
    if announced <= 0 and ist.duration and ist.time_base:
        announced = round(float(ist.duration * ist.time_base) * float(rate))
    reason = truncation_reason(decoded if decoded is not None else round(last_time * float(rate)) + 1, announced)
    if reason is not None:
        raise VideoDecodeError(reason, src)


def _upright(frame, width: int, height: int, rotation: int):
    """``frame`` as yuv420p of the output size (width x height, upright), its rotation metadata applied."""
    import av
    import numpy as np

    if rotation == 0:
        return frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    rgb = frame.reformat(width=stored_w, height=stored_h, format="rgb24", interpolation="AREA").to_ndarray()
    upright = np.ascontiguousarray(np.rot90(rgb, rotation // 90))  # counter-clockwise, as the reader does
    return av.VideoFrame.from_ndarray(upright, format="rgb24").reformat(format="yuv420p")


def _target_size(width: int, height: int, short_side: int, upscale: bool) -> tuple[int, int]:
    short = min(width, height)
    if short <= short_side and not upscale:
        scale = 1.0
    else:
        scale = short_side / short
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def _work(job: tuple) -> tuple[str, str, str]:
    """Worker: returns (relpath, status, detail) with status in done/broken."""
    relpath, src, dst, start, end, options = job
    from gnvideo.data.validation import VideoDecodeError, problem_reason, video_problem

    try:
        n = transcode(src, dst, start, end, **options)
    except Exception as e:  # any decoder failure marks the source broken: reported, not raised
        partial_path(dst).unlink(missing_ok=True)
        reason = problem_reason(e)
        if isinstance(e, VideoDecodeError) and reason.startswith(("decode error", "truncated")):
            reason = video_problem(src) or reason  # the whole-file verdict, word for word what check_videos says
        return relpath, "broken", reason
    return relpath, "done", str(n)


def prepare(csv_files: list[str], video_dir: str, out: str, short_side: int = 256, upscale: bool = True,
            workers: int | None = None, crf: int = 23, preset: str = "veryfast", split: str | None = None,
            progress: bool = True, labels: str | None = None) -> dict:
    """Run the whole preparation; returns the report (also written to ``out/prepare_report.json``).

    Every CSV row is checked before anything is encoded. ``labels`` is the class-name file every label must be in;
    default ``out/labels.txt`` when it exists, else the packaged Kinetics-400 list (the dataset's default too). A
    given ``labels`` file is copied to ``out/labels.txt``, where the dataset finds it.
    """
    out_dir = Path(out)
    own_labels = out_dir / "labels.txt"
    names = load_label_names(labels if labels is not None else (own_labels if own_labels.is_file() else None))
    clips: list[Clip] = []
    for f in csv_files:
        clips.extend(read_official_csv(f, default_split=split, label_names=names))
    if labels is not None and (not own_labels.is_file() or load_label_names(own_labels) != names):
        write_text_atomic(own_labels, "\n".join(names) + "\n")
    index = index_video_files(video_dir)
    options = {"short_side": short_side, "upscale": upscale, "crf": crf, "preset": preset}
    jobs, missing, existing = [], [], []
    seen: set[str] = set()
    for c in clips:
        if c.relpath in seen:
            continue
        seen.add(c.relpath)
        dst = out_dir / c.relpath
        if dst.is_file() and dst.stat().st_size > 0:
            existing.append(c.relpath)
            continue
        src, trimmed = find_source(index, c)
        if src is None:
            missing.append({"youtube_id": c.youtube_id, "csv": c.csv_file, "line": c.line, "path": c.relpath})
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        start, end = (0.0, float(c.time_end - c.time_start)) if trimmed else (float(c.time_start), float(c.time_end))
        jobs.append((c.relpath, str(src), str(dst), start, end, options))
    results = _run(jobs, workers, progress)
    done = {r[0] for r in results if r[1] == "done"} | set(existing)
    src_of = {j[0]: j[1] for j in jobs}
    broken = [{"path": r[0], "source": src_of[r[0]], "reason": r[2]} for r in results if r[1] == "broken"]
    by_split: dict[str, list] = {}
    for c in clips:
        if c.relpath in done:
            by_split.setdefault(c.split, []).append(c)
    written_rows: set[str] = set()
    for name, rows in by_split.items():
        unique = []
        for c in rows:
            if c.relpath not in written_rows:
                written_rows.add(c.relpath)
                unique.append((c.label, c.youtube_id, c.time_start, c.time_end, c.split))
        write_annotation_csv(out_dir / "annotations" / f"{name}.csv", unique)
    report = {
        "csv_files": [str(f) for f in csv_files], "video_dir": str(video_dir), "short_side": short_side,
        "clips": len(seen), "done": len(done), "newly_encoded": len(done) - len(existing),
        "skipped_existing": len(existing), "missing": missing, "broken": broken,
        "annotations": {name: str(out_dir / "annotations" / f"{name}.csv") for name in by_split},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prepare_report.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def _run(jobs: list, workers: int | None, progress: bool) -> list[tuple[str, str, str]]:
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = None
    if progress and jobs:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        task = bar.add_task("encoding", total=len(jobs))
        bar.start()
    results = []
    try:
        if workers <= 1 or len(jobs) <= 1:
            iterator = map(_work, jobs)
            pool = None
        else:
            pool = multiprocessing.get_context().Pool(min(workers, len(jobs)))
            iterator = pool.imap_unordered(_work, jobs)
        try:
            for r in iterator:
                results.append(r)
                if bar is not None:
                    bar.advance(task)
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        if bar is not None:
            bar.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", nargs="+", required=True, help="official annotation CSV file(s)")
    p.add_argument("--videos", required=True, help="directory with the downloaded raw videos (searched recursively)")
    p.add_argument("--out", required=True, help="output dataset root")
    p.add_argument("--short-side", type=int, default=256, help="short side of the output in pixels (256 or 320)")
    p.add_argument("--no-upscale", action="store_true", help="keep sources smaller than --short-side as they are")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs)")
    p.add_argument("--crf", type=int, default=23, help="x264 quality (lower = better, default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.add_argument("--split", default=None, help="split for CSVs without a split column (default: from file name)")
    p.add_argument("--labels", default=None, help="class names, one per line, every CSV label must be one of them "
                   "(default OUT/labels.txt if present, else the packaged Kinetics-400 list); copied to OUT/labels.txt")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.short_side < 16:
        p.error(f"--short-side must be >= 16, got {args.short_side}")
    try:
        report = prepare(args.csv, args.videos, args.out, short_side=args.short_side, upscale=not args.no_upscale,
                         workers=args.workers, crf=args.crf, preset=args.preset, split=args.split,
                         progress=not args.no_progress, labels=args.labels)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{report['done']}/{report['clips']} clips ready ({report['newly_encoded']} encoded now, "
          f"{report['skipped_existing']} already there), {len(report['missing'])} missing, "
          f"{len(report['broken'])} broken; report: {Path(args.out) / 'prepare_report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
