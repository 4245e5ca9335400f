#!/usr/bin/env python
"""Decode every video of a dataset in parallel and list the broken ones.

Input: folders (every video file below them) or video files, or an annotation file (official CSV, or a list with one
path per line relative to ``--root``) plus ``--root``. A video is broken by the one definition the dataset and
``prepare_kinetics`` use (``gnvideo.data.decode.errors``): missing, empty, cannot be opened, no decodable frame, a frame
that fails to decode, or clearly fewer frames than the container announces. Every frame is decoded with
``gnvideo.data.open_video``, the reader the dataset uses.

Each file is checked in a worker process (``gnvideo.data.decode.pool``): a file whose decoder crashes its worker
("decoder crashed: signal 11 (SIGSEGV)") or gives no frames for ``--timeout`` seconds ("decoder hung: no frames after
60 s") is listed and its worker replaced, so the run always ends. FFmpeg's messages are silenced by sending the
workers' stderr to /dev/null; no Python log callback is installed (``av.logging.set_level`` installs one, and it
deadlocked FFmpeg's decoder threads on a corrupted h264 file).

Output (``--output``, default ``<root>/broken_videos.txt`` for one folder or an annotation; none for lone files): one
broken video per line, ``<path><TAB><reason>``, the format of the dataset's ``exclude_list``. Paths are absolute
unless ``--relative``. Verdicts are written as they come: broken lines are appended to the output, every verdict to
``<output>.done``; a rerun skips the files already in ``.done`` (``--fresh`` checks everything again) and finally
rewrites the output with the broken files among the inputs, in input order. Every broken file is printed once with
its reason. Exit status: 0 all good, 1 some broken, 2 bad arguments.

``--keyframes`` decodes nothing and writes no list: it reports how cheap the videos are to read at random clip
positions, from their headers and packet flags: the distribution of the longest keyframe interval per video, the
frames a random training clip (``--num-frames`` x ``--sampling-rate``) decodes on average, the x264 settings found,
and, when the keyframes lie far above the clip span, the command that re-encodes the folder (``--json`` keeps it all).

Example (``python data_prep/check_videos.py`` and ``python -m data_prep.check_videos`` take the same arguments)::

    gnvideo-check-videos data/kinetics400 --workers 16
    gnvideo-check-videos clip.mp4 other.avi
    gnvideo-check-videos --annotation data/kinetics400/annotations/val.csv --root data/kinetics400
    gnvideo-check-videos data/kinetics400 --keyframes --num-frames 32 --sampling-rate 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gnvideo.data.annotations import read_annotations
from gnvideo.data.decode.pool import DEFAULT_TIMEOUT, isolated_map
from gnvideo.data.layout import (
    exclude_line,
    is_annotation_csv,
    list_video_files,
    read_annotation_csv,
    read_list_lines,
    split_from_file_name,
    split_name,
    write_exclude_list,
)


def check_video(path: str | os.PathLike, backend: str = "auto", progress=None) -> str | None:
    """Decode every frame of one video; None when it is fine, else the one-line reason. ``progress()`` is called
    as frames are decoded (the worker's hang clock)."""
    from gnvideo.data.decode import video_problem

    return video_problem(path, backend, progress=progress)


def _check_job(job: tuple[str, str], progress) -> str | None:
    return check_video(*job, progress=progress)


def check_all(paths: list[str], workers: int | None = None, backend: str = "auto", progress: bool = False,
              timeout: float = DEFAULT_TIMEOUT, on_result=None, quiet: bool = True) -> list[tuple[str, str]]:
    """Check many files in parallel; returns ``(path, reason)`` for the broken ones, in input order.

    Args:
        paths: the files.
        workers: worker processes (None = all CPUs; 0 = in this process, without crash or hang protection).
        backend: reader backend.
        progress: show a progress bar.
        timeout: seconds without a decoded frame before a file's worker is killed and the file listed as hung.
        on_result: called with ``(path, reason or None)`` as each verdict arrives.
        quiet: send the workers' stderr (FFmpeg's messages) to /dev/null.
    """
    workers = (os.cpu_count() or 1) if workers is None else workers
    results: dict[str, str | None] = {}
    bar = task = None
    if progress and paths:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("checking"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        task = bar.add_task("checking", total=len(paths))
        bar.start()

    def record(path: str, reason: str | None) -> None:
        results[path] = reason
        if on_result is not None:
            on_result(path, reason)
        if bar is not None:
            bar.advance(task)

    try:
        if workers <= 0:
            for p in paths:
                record(p, check_video(p, backend))
        else:
            from gnvideo.data.decode import video_problem  # noqa: F401 - imported once, before the workers fork

            for index, reason, failure in isolated_map(_check_job, [(p, backend) for p in paths], workers, timeout,
                                                       quiet=quiet):
                record(paths[index], failure or reason)
    finally:
        if bar is not None:
            bar.stop()
    return [(p, results[p]) for p in paths if results.get(p)]


def list_inputs(inputs: list[str]) -> list[str]:
    """Video files named by folders (searched recursively) and files, in order, without duplicates."""
    found: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            found.extend(list_video_files(item))
        elif os.path.isfile(item):
            found.append(item)
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return list(dict.fromkeys(found))


def paths_from_annotation(annotation: str | os.PathLike, root: str | os.PathLike,
                          split: str | None = None) -> list[str]:
    """Video paths named by an annotation file, resolved exactly as the dataset resolves them.

    An official CSV (header with ``youtube_id``) goes through ``gnvideo.data.read_annotations`` (files under
    ``root/<split>``, any video extension, label folders or flat); ``split`` defaults to the first row's ``split``
    column, else the file name. Any other file is a list with one path per line (text before a TAB, else before the
    first blank), relative to ``root/<split>`` when that folder exists, else to ``root``.

    Raises:
        FileNotFoundError: missing annotation file.
        ValueError: malformed CSV row (names the file and line) or no split.
    """
    annotation, root = Path(annotation), Path(root)
    if not annotation.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotation}")
    if not is_annotation_csv(annotation):
        folder = root / split if split and (root / split).is_dir() else root
        return [str(folder / path) for _, path, _ in read_list_lines(annotation)]
    rows = read_annotation_csv(annotation)
    name = split or (rows[0].split if rows else None) or split_from_file_name(annotation)
    try:
        folder = split_name(name or "")
    except ValueError:
        raise ValueError(f"{annotation}: cannot tell the split folder (got {name!r}); pass --split") from None
    entries = read_annotations(annotation, root, folder, sorted({row.label for row in rows}))
    return [e.path for e in entries]


def read_done(done: str | os.PathLike) -> dict[str, str | None]:
    """Verdicts of an earlier run: absolute path -> reason (None = fine); lines cut by a kill are ignored."""
    verdicts: dict[str, str | None] = {}
    if not os.path.isfile(done):
        return verdicts
    with open(done, encoding="utf-8") as f:
        for text in f:
            if not text.endswith("\n") or "\t" not in text:
                continue
            path, reason = text.rstrip("\n").split("\t", 1)
            verdicts[path] = None if reason == "ok" else reason
    return verdicts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="PATH", help="dataset folder(s) or video file(s) to check")
    p.add_argument("--annotation", help="check only the videos of this CSV/list (needs --root or one folder)")
    p.add_argument("--root", help="dataset root for --annotation")
    p.add_argument("--split", help="split directory for CSVs without a split column")
    p.add_argument("--output", help="list of broken videos (default <root>/broken_videos.txt)")
    p.add_argument("--relative", action="store_true", help="write paths relative to the root (default absolute)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs; 0 = in process)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                   help=f"seconds without a decoded frame before a file is listed as hung (default "
                   f"{DEFAULT_TIMEOUT:g})")
    p.add_argument("--fresh", action="store_true", help="check every file again instead of continuing")
    p.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"))
    p.add_argument("--keyframes", action="store_true", help="instead of decoding: report keyframe intervals and the "
                   "frames a random training clip decodes (headers and packet flags only)")
    p.add_argument("--num-frames", type=int, default=32, help="--keyframes: frames per training clip (default 32)")
    p.add_argument("--sampling-rate", type=int, default=2, help="--keyframes: stride between clip frames (default 2)")
    p.add_argument("--json", metavar="OUT", help="--keyframes: also write the summary and per-video facts to OUT")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.timeout <= 0:
        p.error(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.num_frames < 1 or args.sampling_rate < 1:
        p.error("--num-frames and --sampling-rate must be >= 1")
    root = args.root or (args.inputs[0] if len(args.inputs) == 1 and os.path.isdir(args.inputs[0]) else None)
    if not args.inputs and not args.annotation:
        p.error("give dataset folders or video files, or --annotation with --root")
    try:
        if args.annotation:
            if root is None:
                p.error("--annotation needs --root (or one dataset folder)")
            paths = paths_from_annotation(args.annotation, root, args.split)
        else:
            paths = list_inputs(args.inputs)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.keyframes:
        from gnvideo.data.random_access import summarize

        from .keyframe_report import keyframe_facts, print_keyframe_summary

        facts = keyframe_facts(paths, args.num_frames, args.sampling_rate, args.workers, not args.no_progress,
                               args.timeout)
        summary = summarize(facts, args.num_frames, args.sampling_rate)
        print_keyframe_summary(summary, facts, root)
        if args.json:
            Path(args.json).write_text(json.dumps({"summary": summary, "videos": facts}, indent=1), encoding="utf-8")
        return 0
    output = args.output or (os.path.join(root, "broken_videos.txt") if root else None)
    done_file = f"{output}.done" if output else None
    earlier = {} if args.fresh or done_file is None else read_done(done_file)
    todo = [q for q in paths if os.path.abspath(q) not in earlier]
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        if args.fresh or not earlier:  # a new run: start both files empty
            open(output, "w").close()
            open(done_file, "w").close()
        if len(todo) < len(paths):
            print(f"continuing: {len(paths) - len(todo)} of {len(paths)} videos checked earlier ({done_file})")
    out_f = open(output, "a", encoding="utf-8") if output else None
    done_f = open(done_file, "a", encoding="utf-8") if done_file else None

    verdicts = {q: earlier[os.path.abspath(q)] for q in paths if os.path.abspath(q) in earlier}

    def on_result(path: str, reason: str | None) -> None:
        verdicts[path] = reason
        if reason:
            print(f"broken: {path}: {reason}", flush=True)
        if out_f is not None:
            if reason:
                out_f.write(exclude_line(path, reason, root, args.relative))
                out_f.flush()
            done_f.write(f"{os.path.abspath(path)}\t{' '.join(reason.split()) if reason else 'ok'}\n")
            done_f.flush()

    try:
        check_all(todo, workers=args.workers, backend=args.backend, progress=not args.no_progress,
                  timeout=args.timeout, on_result=on_result)
    finally:
        for f in (out_f, done_f):
            if f is not None:
                f.close()
    broken = [(q, verdicts[q]) for q in paths if verdicts.get(q)]
    if output:
        write_exclude_list(output, broken, root=root, relative=args.relative)
    where = f"; list: {output}" if output else ""
    print(f"checked {len(paths)} videos: {len(broken)} broken{where}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
