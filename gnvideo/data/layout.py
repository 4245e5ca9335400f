"""The Kinetics on-disk format, in one place: video extensions, CSV columns, split names, clip file names, the rule for
``time_start`` / ``time_end`` and labels, reading and writing annotation CSVs, finding video files under a folder, and
exclude lists. The dataset (``annotations.py``, ``kinetics.py``), the synthetic generator and every ``data_prep/``
script use these and keep no format logic of their own.

Layout of a dataset root::

    <split>/<label>/<youtube_id>_<start:06d>_<end:06d>.<ext>   (or flat, <split>/<youtube_id>_...)
    annotations/<split>.csv                                    label,youtube_id,time_start,time_end,split
    labels.txt                                                 one class name per line
    broken_videos.txt                                          exclude list: <path><TAB><reason> per line
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv")
CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end")  # required in an annotation CSV
ANNOTATION_COLUMNS = (*CSV_COLUMNS, "split")  # the columns written
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                 "validation": "val", "test": "test"}


def is_video_file(name: str) -> bool:
    """Whether a file name has a video extension and is not hidden (partial downloads start with a dot)."""
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and any(base.lower().endswith(ext) for ext in VIDEO_EXTENSIONS)


def clip_stem(youtube_id: str, time_start: int, time_end: int) -> str:
    """Kinetics clip file stem ``<id>_<start:06d>_<end:06d>`` (add the extension)."""
    return f"{youtube_id}_{int(time_start):06d}_{int(time_end):06d}"


def parse_time_span(start_text: str, end_text: str) -> tuple[int, int]:
    """``time_start`` / ``time_end`` of an annotation row, in whole seconds.

    The rule: both are whole, non-negative numbers of seconds ("3" or "3.0"), and start < end.

    Raises:
        ValueError: the reason, without file or line (the caller adds them).
    """
    values = []
    for name, text in (("time_start", start_text), ("time_end", end_text)):
        try:
            value = float(str(text).strip())
        except ValueError:
            raise ValueError(f"{name} is not a number: {text!r}") from None
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{name} must be a whole number of seconds, got {text!r}")
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {text!r}")
        values.append(int(value))
    start, end = values
    if start >= end:
        raise ValueError(f"need time_start < time_end, got {start} and {end}")
    return start, end


def check_label(label: str, label_index: Mapping[str, int]) -> int:
    """Class index of ``label``.

    Raises:
        ValueError: unknown label (the caller adds file and line).
    """
    if label not in label_index:
        raise ValueError(f"unknown label {label!r} (not among the {len(label_index)} class names)")
    return label_index[label]


def clip_filename(youtube_id: str, time_start: int, time_end: int, ext: str = ".mp4") -> str:
    """Kinetics clip file name ``<id>_<start:06d>_<end:06d><ext>``."""
    return clip_stem(youtube_id, time_start, time_end) + ext


def split_name(text: str) -> str:
    """Canonical split ("train", "val", "test") of a split name or alias, e.g. "validate" -> "val".

    Raises:
        ValueError: not a known split (the caller adds file and line).
    """
    key = str(text).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {text!r}; expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[key]


def split_from_file_name(path: str | os.PathLike) -> str | None:
    """The split an annotation file's name tells (``validate.csv`` -> "val"), or None."""
    stem = Path(path).stem.lower()
    return next((SPLIT_ALIASES[alias] for alias in SPLIT_ALIASES if alias in stem), None)


# ----------------------------------------------------------------------------------------------- annotation CSV files

class AnnotationRow(NamedTuple):
    """One checked row of an official annotation CSV; ``split`` is "" when the file has no split column and ``line``
    is its line number in the file (for messages)."""

    label: str
    youtube_id: str
    time_start: int
    time_end: int
    split: str
    line: int

    @property
    def stem(self) -> str:
        """The clip's file stem, ``<id>_<start:06d>_<end:06d>``."""
        return clip_stem(self.youtube_id, self.time_start, self.time_end)


def is_annotation_csv(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an official CSV (its first line is a comma-separated header naming ``youtube_id``) rather
    than a ``path label`` list."""
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    return "youtube_id" in first and "," in first


def read_annotation_csv(path: str | os.PathLike, label_names: Sequence[str] | None = None) -> list[AnnotationRow]:
    """Rows of an official Kinetics CSV, each checked by the rules of this module.

    The header must name :data:`CSV_COLUMNS` (in any order; ``split`` and extra columns such as ``is_cc`` are
    optional). Blank lines are skipped. Labels with commas or quotes must be CSV-quoted.

    Args:
        path: the CSV file.
        label_names: class names every label must be one of (None: any label).

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line, ``<file>:<line>: <reason>``: a missing column, a row with the wrong number of fields, an
            empty or '/'-holding label or id, bad times, or an unknown label.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    label_index = None if label_names is None else {name: i for i, name in enumerate(label_names)}
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {missing}; expected {','.join(ANNOTATION_COLUMNS)}, got "
                             f"{','.join(header)!r}")
        col = {name: header.index(name) for name in ANNOTATION_COLUMNS if name in header}
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            try:
                rows.append(_check_row(row, header, col, line, label_index))
            except ValueError as err:
                raise ValueError(f"{path}:{line}: {err}") from None
    return rows


def _check_row(row: list[str], header: list[str], col: dict[str, int], line: int,
               label_index: Mapping[str, int] | None) -> AnnotationRow:
    if len(row) != len(header):
        raise ValueError(f"malformed row, {len(row)} fields where the header has {len(header)}: {row!r}")
    label, yid = row[col["label"]].strip(), row[col["youtube_id"]].strip()
    if not label or not yid:
        raise ValueError(f"malformed row, empty label or youtube_id: {row!r}")
    if "/" in label or "/" in yid or label in (".", ".."):
        raise ValueError(f"malformed row, label and youtube_id must not contain '/': {row!r}")
    try:
        start, end = parse_time_span(row[col["time_start"]], row[col["time_end"]])
    except ValueError as err:
        raise ValueError(f"malformed row, {err}: {row!r}") from None
    if label_index is not None:
        check_label(label, label_index)
    split = row[col["split"]].strip() if "split" in col else ""
    return AnnotationRow(label, yid, start, end, split, line)


def _csv_field(value: object) -> str:
    text = str(value)
    if any(c in text for c in ' ,"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_annotation_csv(path: str | os.PathLike, rows: Iterable[Sequence[object]]) -> None:
    """Write an annotation file with the official columns (:data:`ANNOTATION_COLUMNS`), atomically.

    Fields containing spaces, commas or quotes are quoted (as in the official files), so readers must use a CSV
    parser (:func:`read_annotation_csv`).

    Args:
        path: destination ``.csv`` (its folder is created).
        rows: ``(label, youtube_id, time_start, time_end, split)`` tuples.
    """
    lines = [",".join(ANNOTATION_COLUMNS)]
    for row in rows:
        if len(row) != len(ANNOTATION_COLUMNS):
            raise ValueError(f"{path}: row {row!r} must have the columns {ANNOTATION_COLUMNS}")
        lines.append(",".join(_csv_field(v) for v in row))
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to a hidden temp file next to ``path`` and rename it over ``path`` (folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- list files and folders

def read_list_lines(path: str | os.PathLike, split_at_blank: bool = True) -> list[tuple[int, str, str]]:
    """``(line number, path, rest)`` for each line of a list file, skipping blank lines and ``#`` comments.

    A line splits at its first TAB; a line without one splits at its first blank when ``split_at_blank`` (else the
    whole line is the path). ``rest`` is "" when there is nothing after the path.
    """
    out = []
    with open(path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            if "\t" in text:
                first, rest = text.split("\t", 1)
            elif split_at_blank and " " in text:
                first, rest = text.split(None, 1)
            else:
                first, rest = text, ""
            out.append((line, first.strip(), rest.strip()))
    return out


def list_video_files(folder: str | os.PathLike) -> list[str]:
    """Every video file below ``folder`` (recursive, sorted by folder then name; hidden files and folders skipped).

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"folder not found: {folder}")
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, name) for name in sorted(filenames) if is_video_file(name))
    return found


def index_video_files(folder: str | os.PathLike) -> dict[str, str]:
    """Map file stem -> path for every video file below ``folder`` (:func:`list_video_files`; the first one in that
    order wins when two files share a stem)."""
    found: dict[str, str] = {}
    for path in list_video_files(folder):
        found.setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return found


# --------------------------------------------------------------------------------------------------- exclude lists

def read_exclude_list(path: str | os.PathLike) -> set[str]:
    """Keys of the videos to leave out: the absolute path and the file name of each listed path.

    The format (written by :func:`write_exclude_list`): one ``<path>[<TAB><reason>]`` per line, ``#`` comments.

    Raises:
        FileNotFoundError: no such file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exclude list not found: {path}")
    keys: set[str] = set()
    for _, listed, _ in read_list_lines(path, split_at_blank=False):
        keys.add(os.path.abspath(listed))
        keys.add(os.path.basename(listed))
    return keys


def is_excluded(path: str, exclude: set[str]) -> bool:
    """Whether ``path``'s absolute path or file name is among the keys of :func:`read_exclude_list`."""
    return os.path.abspath(path) in exclude or os.path.basename(path) in exclude


def exclude_line(path: str, reason: str, root: str | None = None, relative: bool = False) -> str:
    """One exclude-list line ``<path><TAB><reason>\\n``: the path absolute, or relative to ``root`` when
    ``relative``; the reason on one line (white space folded)."""
    shown = os.path.relpath(path, root) if relative and root else os.path.abspath(path)
    return f"{shown}\t{' '.join(reason.split())}\n"


def write_exclude_list(path: str | os.PathLike, broken: Iterable[tuple[str, str]], root: str | None = None,
                       relative: bool = False) -> None:
    """Write ``(video path, reason)`` pairs as an exclude list (:func:`exclude_line` each), atomically."""
    write_text_atomic(path, "".join(exclude_line(p, reason, root, relative) for p, reason in broken))


__all__ = ["ANNOTATION_COLUMNS", "CSV_COLUMNS", "SPLIT_ALIASES", "VIDEO_EXTENSIONS", "AnnotationRow", "check_label",
           "clip_filename", "clip_stem", "exclude_line", "index_video_files", "is_annotation_csv", "is_excluded",
           "is_video_file", "list_video_files", "parse_time_span", "read_annotation_csv", "read_exclude_list",
           "read_list_lines", "split_from_file_name", "split_name", "write_annotation_csv", "write_exclude_list",
           "write_text_atomic"]
