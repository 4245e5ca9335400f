#!/usr/bin/env python
"""Decode every video of a dataset in parallel and list the broken ones.

Input: a dataset root (every video file below it), or an annotation file (official CSV, or a list with one path per
line relative to ``--root``) plus ``--root``. Each file is opened with ``gnvideo.data.open_video`` (the reader the
dataset uses) and all its frames are decoded. A file is broken when it is missing, empty, cannot be opened, has no
decodable frame, or decodes to clearly fewer frames than its container announces (truncated: short by more than
max(2, 5%)).

Output (``--output``, default ``<root>/broken_videos.txt``): one broken video per line, ``<path><TAB><reason>``, the
format the dataset's ``exclude_list`` option reads (it uses the text before the first TAB). Paths are absolute unless
``--relative`` (then relative to ``--root``). A decoder crash (segfault) in a worker is caught: the file is listed with
the reason "decoder crashed". Exit status: 0 all good, 1 some broken, 2 bad arguments.

Example::

    python data_prep/check_videos.py data/kinetics400 --workers 16
    python data_prep/check_videos.py --annotation data/kinetics400/annotations/val.csv --root data/kinetics400
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

VIDEO_EXTENSIONS = {".mp4", ".webm", ".mkv", ".avi", ".mov", ".flv", ".m4v", ".3gp", ".mpg", ".mpeg", ".ogv"}
CHUNK = 256  # frames decoded per call (bounds memory)
SPLIT_ALIASES = {"train": "train", "val": "val", "validate": "val", "validation": "val", "test": "test"}


def _open_video():
    try:
        from gnvideo.data import open_video
    except ImportError:  # package __init__ not written yet: the reader module itself
        from gnvideo.data.readers import open_video
    return open_video


def container_frame_count(path: str | os.PathLike) -> int:
    """Frame count the container header announces (0 when unknown): frame count, else duration x rate."""
    import av

    try:
        with av.open(str(path)) as c:
            stream = c.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration and stream.time_base and rate:
                return int(round(float(stream.duration * stream.time_base * rate)))
    except Exception:  # unreadable header: the reader reports why
        return 0
    return 0


def check_video(path: str | os.PathLike, backend: str = "auto") -> str | None:
    """Decode every frame of one video.

    Args:
        path: the video file.
        backend: reader backend passed to ``open_video`` ("auto", "decord", "pyav").

    Returns:
        None when the video decodes completely, else a one-line reason.
    """
    open_video = _open_video()
    try:
        reader = open_video(path, backend=backend)
        with reader:
            claimed = int(reader.num_frames)
            if claimed <= 0:
                return "no frames"
            announced = container_frame_count(path)  # decord counts only the packets present in a cut file
            decoded = 0
            for start in range(0, claimed, CHUNK):
                indices = range(start, min(start + CHUNK, claimed))
                frames = reader.frames(indices)
                if tuple(frames.shape[:1]) != (len(indices),) or frames.ndim != 4 or frames.shape[-1] != 3:
                    return f"unexpected frame batch shape {tuple(frames.shape)}"
                decoded = min(int(reader.num_frames), start + len(indices))
                if reader.num_frames < claimed:  # the reader found the real end early
                    break
            expected = max(claimed, announced)
            if expected - decoded > max(2, 0.05 * expected):
                return f"truncated: {decoded} of {expected} frames decodable"
    except FileNotFoundError:
        return "file not found"
    except Exception as e:  # every decoder failure is a finding, reported per file
        return " ".join(f"{type(e).__name__}: {e}".split())[:500]
    return None


def _check_one(args: tuple[str, str]) -> tuple[str, str | None]:
    path, backend = args
    return path, check_video(path, backend)


def _isolated(path: str, backend: str) -> tuple[str, str | None]:
    """Check one file in its own process, so a decoder crash names the file."""
    with ProcessPoolExecutor(1) as ex:
        try:
            return ex.submit(_check_one, (path, backend)).result()
        except BrokenProcessPool:
            return path, "decoder crashed (worker process died)"


def check_all(paths: list[str], workers: int | None = None, backend: str = "auto",
              progress: bool = False) -> list[tuple[str, str]]:
    """Check many files in parallel; returns ``(path, reason)`` for the broken ones, in input order.

    At most ``2 * workers`` files are in flight; when a worker dies (decoder segfault) those files are re-checked one
    per process and the rest continue in a fresh pool.
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
        if bar is not None:
            bar.advance(task)

    try:
        if workers <= 0:
            for p in paths:
                record(p, check_video(p, backend))
        pending = deque(paths if workers > 0 else [])
        while pending:
            suspects: list[str] = []
            with ProcessPoolExecutor(workers) as ex:
                inflight: dict = {}
                while pending or inflight:
                    while pending and len(inflight) < 2 * workers:
                        p = pending.popleft()
                        inflight[ex.submit(_check_one, (p, backend))] = p
                    done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                    crashed = False
                    for fut in done:
                        p = inflight.pop(fut)
                        try:
                            record(*fut.result())
                        except BrokenProcessPool:
                            crashed = True
                            suspects.append(p)
                    if crashed:
                        suspects.extend(inflight.values())
                        break
            for p in suspects:
                record(*_isolated(p, backend))
    finally:
        if bar is not None:
            bar.stop()
    return [(p, results[p]) for p in paths if results.get(p)]


def list_videos(root: str | os.PathLike) -> list[str]:
    """Every video file below ``root`` (hidden and partial files skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root not found: {root}")
    found = []
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(str(Path(dirpath) / f) for f in sorted(files)
                     if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS)
    return found


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
    from gnvideo.data import read_annotations

    annotation, root = Path(annotation), Path(root)
    if not annotation.is_file():
        raise FileNotFoundError(f"annotation file not found: {annotation}")
    with open(annotation, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        if "youtube_id" not in first or "," not in first:
            folder = root / split if split and (root / split).is_dir() else root
            texts = (line.strip() for line in f)
            return [str(folder / (t.split("\t", 1)[0] if "\t" in t else t.split(None, 1)[0]).strip())
                    for t in texts if t and not t.startswith("#")]
        rows = list(csv.DictReader(f))
    name = split or (rows[0].get("split") if rows else None) or next(
        (s for s in SPLIT_ALIASES if s in annotation.stem.lower()), None)
    if name is None or name.strip().lower() not in SPLIT_ALIASES:
        raise ValueError(f"{annotation}: cannot tell the split folder (got {name!r}); pass --split")
    labels = sorted({(row.get("label") or "").strip() for row in rows})
    entries = read_annotations(annotation, root, SPLIT_ALIASES[name.strip().lower()], labels)
    return [e.path for e in entries]


def write_list(output: str | os.PathLike, broken: list[tuple[str, str]], root: str | None = None,
               relative: bool = False) -> None:
    """Write ``path<TAB>reason`` lines (atomically)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        for path, reason in broken:
            shown = os.path.relpath(path, root) if relative and root else os.path.abspath(path)
            f.write(f"{shown}\t{' '.join(reason.split())}\n")
    os.replace(tmp, output)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", nargs="?", help="dataset root: check every video file below it")
    p.add_argument("--annotation", help="check only the videos of this CSV/list (needs --root or DATASET)")
    p.add_argument("--root", help="dataset root for --annotation")
    p.add_argument("--split", help="split directory for CSVs without a split column")
    p.add_argument("--output", help="list of broken videos (default <root>/broken_videos.txt)")
    p.add_argument("--relative", action="store_true", help="write paths relative to the root (default absolute)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs; 0 = in process)")
    p.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:  # FFmpeg's own messages about broken files would drown the progress bar; the reasons are in the list
        import av.logging

        av.logging.set_level(av.logging.PANIC)
    except (ImportError, AttributeError):
        pass
    root = args.root or args.dataset
    if root is None:
        p.error("give a dataset root, or --annotation with --root")
    try:
        paths = paths_from_annotation(args.annotation, root, args.split) if args.annotation else list_videos(root)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    broken = check_all(paths, workers=args.workers, backend=args.backend, progress=not args.no_progress)
    output = args.output or os.path.join(root, "broken_videos.txt")
    write_list(output, broken, root=root, relative=args.relative)
    print(f"checked {len(paths)} videos: {len(broken)} broken; list: {output}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
