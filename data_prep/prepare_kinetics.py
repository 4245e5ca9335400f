#!/usr/bin/env python
"""Trim, resize and re-encode already-downloaded Kinetics videos into the layout gnvideo reads.

Input: the official annotation CSV(s) (columns ``label,youtube_id,time_start,time_end,split``) and a directory with
the raw downloads, named ``<youtube_id>.<ext>`` (full videos: the clip is cut at [time_start, time_end]) or
``<youtube_id>_<start>_<end>.<ext>`` (already trimmed: the whole file is used), searched recursively.

Output (``--out``)::

    <split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4   h264/yuv420p, short side --short-side, no audio
    annotations/<split>.csv                                     rows for the clips that exist (official columns)
    labels.txt                                                  the --labels class names, when given
    prepare_report.json                                         missing and broken sources, counts, the encoder
                                                                settings of every clip

Built for random clip access: a keyframe at least every ``--keyint`` frames (default 64, one clip span; x264's own
default is 250, one or two keyframes in a 10 s clip) and CAVLC entropy coding (``--cabac`` turns CABAC back on), so a
random training clip decodes about half as many frames, each faster (README, "Data loading").

Every row is checked before anything is encoded, with the dataset's rules (``gnvideo.data.layout``): whole,
non-negative seconds with time_start < time_end, and a label among the class names (``--labels``). Sources are
broken by the rule of ``gnvideo.data.decode.errors`` and reported with check_videos' reason. Output frames are upright
(rotation metadata applied) and are the source frames at the source's rate, none repeated or dropped.

Each source is encoded in a worker process (``gnvideo.data.decode.pool``): a source whose decoder crashes its worker
("decoder crashed: signal 11 (SIGSEGV)") or gives no frames for ``--timeout`` seconds ("decoder hung: no frames after
60 s") is reported broken and its worker replaced; the others go on.

Resumable: finished outputs are skipped; each output is written to a hidden temp file and renamed. Never touches the
network. Example (``python data_prep/prepare_kinetics.py`` and ``python -m data_prep.prepare_kinetics`` take the
same arguments)::

    gnvideo-prepare-kinetics --csv kinetics400/train.csv kinetics400/validate.csv \
        --videos raw_videos/ --out data/kinetics400 --workers 16

``--reencode ROOT`` re-encodes a folder prepared elsewhere (or before) in place with these settings: same file names,
frames, rate and size, so its annotations stay valid; each file is replaced atomically, files that already have
keyframes every ``--keyint`` frames (and the entropy coding asked for) are skipped, so a rerun continues; broken
files are listed and left as they are. Report: ``ROOT/reencode_report.json``::

    gnvideo-prepare-kinetics --reencode data/kinetics400 --workers 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from gnvideo.data.annotations import load_label_names
from gnvideo.data.decode import VideoDecodeError, problem_reason
from gnvideo.data.decode.pool import DEFAULT_TIMEOUT, isolated_map
from gnvideo.data.decode.transcode import DEFAULT_KEYINT, needs_reencode, prepared_x264_params, transcode
from gnvideo.data.decode.writer import partial_path
from gnvideo.data.layout import (
    clip_filename,
    clip_stem,
    index_video_files,
    list_video_files,
    read_annotation_csv,
    split_from_file_name,
    split_name,
    write_annotation_csv,
    write_text_atomic,
)

from .encoder_records import clip_settings, encoder_tables, recorded_encoders

REPORT = "prepare_report.json"
REENCODE_REPORT = "reencode_report.json"
#: containers --reencode writes h264 into (WebM holds no h264; h264 in AVI loses its presentation times)
REENCODE_CONTAINERS = (".mp4", ".m4v", ".mov", ".mkv")


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


def _work(job: tuple, progress=None) -> tuple[str, str, str]:
    """Worker: returns (relpath, status, detail) with status in done/broken; ``progress()`` per decoded frame."""
    relpath, src, dst, start, end, options = job
    from gnvideo.data.decode import VideoDecodeError, problem_reason, video_problem

    try:
        n = transcode(src, dst, start, end, **options, progress=progress)
    except Exception as e:  # any decoder failure marks the source broken: reported, not raised
        partial_path(dst).unlink(missing_ok=True)
        reason = problem_reason(e)
        if isinstance(e, VideoDecodeError) and reason.startswith(("decode error", "truncated")):
            reason = video_problem(src, progress=progress) or reason  # the whole-file verdict, as check_videos says
        return relpath, "broken", reason
    return relpath, "done", str(n)


def prepare(csv_files: list[str], video_dir: str, out: str, short_side: int = 256, upscale: bool = True,
            workers: int | None = None, crf: int = 23, preset: str = "veryfast", split: str | None = None,
            progress: bool = True, labels: str | None = None, keyint: int | None = DEFAULT_KEYINT,
            cabac: bool = False, timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Run the whole preparation; returns the report (also written to ``out/prepare_report.json``).

    Every CSV row is checked before anything is encoded. ``labels`` is the class-name file every label must be in;
    default ``out/labels.txt`` when it exists, else the packaged Kinetics-400 list (the dataset's default too). A
    given ``labels`` file is copied to ``out/labels.txt``, where the dataset finds it. ``keyint`` and ``cabac``: see
    ``gnvideo.data.decode.transcode.prepared_x264_params``. The report's ``encoders`` lists the distinct x264
    settings of the clips (as x264 wrote them into each file, or as an earlier report recorded them) and
    ``clip_encoders`` maps every clip to one. ``workers`` processes encode (None = all CPUs; 0 = in this process,
    where a decoder crash ends the run); ``timeout`` is the hang limit.
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
    options = {"short_side": short_side, "upscale": upscale, "crf": crf, "preset": preset,
               "x264_params": prepared_x264_params(keyint, cabac)}
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
    results = _run(jobs, workers, progress, timeout)
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
    kept = set(existing)  # clips from earlier runs keep their record; new ones are read from the file
    earlier = {r: e for r, e in recorded_encoders(out_dir / REPORT).items() if r in kept}
    encoders, clip_encoders = encoder_tables(clip_settings(out_dir, done, earlier))
    report = {
        "csv_files": [str(f) for f in csv_files], "video_dir": str(video_dir), "short_side": short_side,
        "encoder": {"codec": "libx264", "crf": crf, "preset": preset, "x264_params": options["x264_params"]},
        "clips": len(seen), "done": len(done), "newly_encoded": len(done) - len(existing),
        "skipped_existing": len(existing), "missing": missing, "broken": broken,
        "annotations": {name: str(out_dir / "annotations" / f"{name}.csv") for name in by_split},
        "encoders": encoders, "clip_encoders": clip_encoders,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / REPORT, json.dumps(report, indent=1))
    return report


def reencode(root: str, keyint: int | None = DEFAULT_KEYINT, cabac: bool = False, crf: int = 23,
             preset: str = "veryfast", workers: int | None = None, progress: bool = True,
             timeout: float = DEFAULT_TIMEOUT) -> dict:
    """Re-encode every video below ``root`` that :func:`needs_reencode`, in place; returns the report (also written
    to ``root/reencode_report.json``).

    Each file keeps its name, frames, frame rate and size (``transcode`` with ``short_side=None``, the whole file,
    written to a temp file and renamed over the original), so annotations stay valid and an interrupted run loses at
    most the files in progress; a rerun skips the files done. Broken files are reported and left untouched. A
    ``prepare_report.json`` in ``root`` gets the new settings of the re-encoded clips. ``workers`` and ``timeout``
    as in :func:`prepare`.
    """
    root_dir = Path(root)
    if not root_dir.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    options = {"short_side": None, "crf": crf, "preset": preset, "x264_params": prepared_x264_params(keyint, cabac)}
    jobs, fine, unreadable, kept = [], [], [], []
    for path in list_video_files(root_dir):
        relpath = Path(path).relative_to(root_dir).as_posix()
        if Path(path).suffix.lower() not in REENCODE_CONTAINERS:
            kept.append({"path": relpath, "reason": "not re-encoded: h264 is written into .mp4/.m4v/.mov/.mkv only"})
            continue
        try:
            if not needs_reencode(path, keyint, cabac):
                fine.append(relpath)
                continue
        except (VideoDecodeError, OSError) as err:
            unreadable.append({"path": relpath, "reason": problem_reason(err)})
            continue
        jobs.append((relpath, path, path, 0.0, None, options))
    results = _run(jobs, workers, progress, timeout)
    broken = unreadable + [{"path": r[0], "reason": r[2]} for r in results if r[1] == "broken"]
    done = sorted(r[0] for r in results if r[1] == "done")
    settings = clip_settings(root_dir, done, {})
    prepared = root_dir / REPORT
    if done and prepared.is_file():  # keep the prepare report's records true
        try:
            earlier = json.loads(prepared.read_text(encoding="utf-8"))
            clips = {**recorded_encoders(prepared), **settings}
            earlier["encoders"], earlier["clip_encoders"] = encoder_tables(clips)
            write_text_atomic(prepared, json.dumps(earlier, indent=1))
        except (OSError, ValueError):
            pass  # an unreadable report stays as it is; this run's report below holds the new settings
    encoders, clip_encoders = encoder_tables({**clip_settings(root_dir, fine, {}), **settings})  # every readable video
    report = {
        "root": str(root), "encoder": {"codec": "libx264", "crf": crf, "preset": preset,
                                       "x264_params": options["x264_params"]},
        "videos": len(fine) + len(jobs) + len(unreadable) + len(kept),
        "reencoded": len(done), "already_fine": len(fine), "broken": broken, "other_containers": kept,
        "encoders": encoders, "clip_encoders": clip_encoders,
    }
    write_text_atomic(root_dir / REENCODE_REPORT, json.dumps(report, indent=1))
    return report


def _run(jobs: list, workers: int | None, progress: bool, timeout: float) -> list[tuple[str, str, str]]:
    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = None
    if progress and jobs:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("encoding"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        task = bar.add_task("encoding", total=len(jobs))
        bar.start()
    results = []
    try:
        if workers <= 0:
            iterator = ((i, _work(job), None) for i, job in enumerate(jobs))
        else:
            from gnvideo.data.decode import video_problem  # noqa: F401 - imported once, before the workers fork

            iterator = isolated_map(_work, jobs, workers, timeout)
        for index, result, failure in iterator:
            if failure is not None:  # the worker crashed or hung (killed) mid-encode: drop its temp file
                partial_path(jobs[index][2]).unlink(missing_ok=True)
                result = (jobs[index][0], "broken", failure)
            results.append(result)
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", nargs="+", help="official annotation CSV file(s)")
    p.add_argument("--videos", help="directory with the downloaded raw videos (searched recursively)")
    p.add_argument("--out", help="output dataset root")
    p.add_argument("--reencode", metavar="ROOT", help="instead: re-encode the videos below ROOT in place with the "
                   "settings below (names, frames, rate and size kept; resumable); no --csv/--videos/--out")
    p.add_argument("--short-side", type=int, default=256, help="short side of the output in pixels (256 or 320)")
    p.add_argument("--no-upscale", action="store_true", help="keep sources smaller than --short-side as they are")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default: all CPUs; 0 = in this process, without crash or hang protection)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds without a decoded frame before a source is reported hung (default "
                   f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--crf", type=int, default=23, help="x264 quality (lower = better, default 23)")
    p.add_argument("--preset", default="veryfast", help="x264 preset (default veryfast)")
    p.add_argument("--keyint", type=int, default=DEFAULT_KEYINT,
                   help=f"a keyframe at least every KEYINT frames (default {DEFAULT_KEYINT}: one clip span, for fast "
                   "random clip reads; 0 = x264's default, 250)")
    p.add_argument("--cabac", action="store_true", help="CABAC entropy coding: smaller files, slower decoding "
                   "(default CAVLC; README, 'Data loading')")
    p.add_argument("--split", default=None, help="split for CSVs without a split column (default: from file name)")
    p.add_argument("--labels", default=None, help="class names, one per line, every CSV label must be one of them "
                   "(default OUT/labels.txt if present, else the packaged Kinetics-400 list); copied to OUT/labels.txt")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.short_side < 16:
        p.error(f"--short-side must be >= 16, got {args.short_side}")
    if args.timeout <= 0:
        p.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.keyint < 0:
        p.error(f"--keyint must be >= 0 frames, got {args.keyint}")
    if args.reencode and (args.csv or args.videos or args.out):
        p.error("--reencode ROOT takes no --csv, --videos or --out")
    if not args.reencode and not (args.csv and args.videos and args.out):
        p.error("give --csv, --videos and --out (or --reencode ROOT)")
    try:
        if args.reencode:
            report = reencode(args.reencode, keyint=args.keyint, cabac=args.cabac, crf=args.crf, preset=args.preset,
                              workers=args.workers, progress=not args.no_progress, timeout=args.timeout)
        else:
            report = prepare(args.csv, args.videos, args.out, short_side=args.short_side,
                             upscale=not args.no_upscale, workers=args.workers, crf=args.crf, preset=args.preset,
                             split=args.split, progress=not args.no_progress, labels=args.labels,
                             keyint=args.keyint, cabac=args.cabac, timeout=args.timeout)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.reencode:
        others = f", {len(report['other_containers'])} in other containers (kept)" if report["other_containers"] else ""
        print(f"{report['videos']} videos: {report['reencoded']} re-encoded, {report['already_fine']} already fine, "
              f"{len(report['broken'])} broken (left as they are){others}; report: "
              f"{Path(args.reencode) / REENCODE_REPORT}")
        return 0
    print(f"{report['done']}/{report['clips']} clips ready ({report['newly_encoded']} encoded now, "
          f"{report['skipped_existing']} already there), {len(report['missing'])} missing, "
          f"{len(report['broken'])} broken; report: {Path(args.out) / REPORT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
