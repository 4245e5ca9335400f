"""Kinetics annotations: class names, the official CSV files, ``path label`` lists and exclude lists.

Official CSV columns: ``label,youtube_id,time_start,time_end,split`` (extra columns such as ``is_cc`` are ignored;
labels with commas, quotes or apostrophes must be CSV-quoted). Video files are looked up under ``root/{split}`` (or
``root`` when that folder does not exist) in either layout, ``{label}/{youtube_id}_{start:06d}_{end:06d}.<ext>`` or
flat ``{youtube_id}_{start:06d}_{end:06d}.<ext>``, with any video extension found on disk.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import NamedTuple

from .layout import CSV_COLUMNS, VIDEO_EXTENSIONS, check_label, clip_stem, is_video_file, parse_time_span

logger = logging.getLogger(__name__)


class VideoEntry(NamedTuple):
    """One video: file path and class index (-1 = unknown, e.g. predict)."""

    path: str
    label: int


def load_label_names(path: str | os.PathLike | None = None) -> list[str]:
    """Class names, one per line (blank lines ignored, surrounding quotes removed).

    Args:
        path: labels file; None = the packaged Kinetics-400 list (400 names, alphabetical).

    Raises:
        FileNotFoundError / ValueError naming the file (missing, empty, duplicate name with its line).
    """
    if path is None:
        text = resources.files("gnvideo.data").joinpath("kinetics400_labels.txt").read_text(encoding="utf-8")
        where = "packaged kinetics400_labels.txt"
    else:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"labels file not found: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        where = os.fspath(path)
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        name = line.strip()
        if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
            name = name[1:-1]
        if not name:
            continue
        if name in seen:
            raise ValueError(f"{where}:{lineno}: duplicate class name {name!r} (first on line {seen[name]})")
        seen[name] = lineno
        names.append(name)
    if not names:
        raise ValueError(f"labels file has no class names: {where}")
    return names


def index_video_files(folder: str) -> dict[str, str]:
    """Map file stem -> path for every video file under ``folder`` (recursive; first one wins on duplicates)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if is_video_file(name):
                found.setdefault(os.path.splitext(name)[0], os.path.join(dirpath, name))
    return found


def _split_folder(root: str, split: str) -> str:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    folder = os.path.join(root, split)
    return folder if split and os.path.isdir(folder) else root


def _read_csv(csv_path: str, folder: str, label_index: dict[str, int]) -> list[VideoEntry]:
    files = index_video_files(folder)
    entries = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(f"{csv_path}:1: header lacks column(s) {missing}; expected {','.join(CSV_COLUMNS)},split")
        col = {name: header.index(name) for name in CSV_COLUMNS}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{csv_path}:{line}: malformed row, {len(row)} fields where the header has "
                                 f"{len(header)}: {row!r}")
            label, yid = row[col["label"]].strip(), row[col["youtube_id"]].strip()
            try:
                start, end = parse_time_span(row[col["time_start"]], row[col["time_end"]])
            except ValueError as err:
                raise ValueError(f"{csv_path}:{line}: malformed row, {err}: {row!r}") from None
            if not yid:
                raise ValueError(f"{csv_path}:{line}: malformed row, empty youtube_id: {row!r}")
            try:
                check_label(label, label_index)
            except ValueError as err:
                raise ValueError(f"{csv_path}:{line}: {err}") from None
            stem = clip_stem(yid, start, end)
            path = files.get(stem) or os.path.join(folder, label, stem + ".mp4")
            entries.append(VideoEntry(path, label_index[label]))
    return entries


def _read_list(list_path: str, root: str, label_index: dict[str, int], names: Sequence[str]) -> list[VideoEntry]:
    entries = []
    with open(list_path, encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            text = text.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split("\t", 1) if "\t" in text else text.split(None, 1)
            if len(parts) != 2:
                raise ValueError(f"{list_path}:{line}: malformed line, expected 'path label': {text!r}")
            path, label = parts[0].strip(), parts[1].strip()
            if label.lstrip("-").isdigit():
                index = int(label)
                if not 0 <= index < len(names):
                    raise ValueError(f"{list_path}:{line}: label index {index} out of range [0, {len(names)})")
            elif label in label_index:
                index = label_index[label]
            else:
                raise ValueError(f"{list_path}:{line}: unknown label {label!r} (not among the {len(names)} "
                                 "class names)")
            entries.append(VideoEntry(path if os.path.isabs(path) else os.path.join(root, path), index))
    return entries


def read_annotations(
    csv_or_list: str | os.PathLike, root: str | os.PathLike, split: str, label_names: Sequence[str]
) -> list[VideoEntry]:
    """Read an official Kinetics CSV or a ``path label`` list into (path, class index) entries.

    Args:
        csv_or_list: CSV with a ``youtube_id`` header, or a text file of ``path label`` lines (label = class index or
            class name; tab-separated when the path contains spaces; paths relative to ``root``).
        root: dataset root; videos live under ``root/{split}`` (or ``root``).
        split: folder name under root ("train", "val", ...).
        label_names: class names; their order defines the indices.

    Raises:
        FileNotFoundError: annotation file or root missing (message names it).
        ValueError: ``file:line`` of a malformed row or an unknown label.
    """
    csv_or_list, root = os.fspath(csv_or_list), os.fspath(root)
    if not os.path.isfile(csv_or_list):
        raise FileNotFoundError(f"annotation file not found: {csv_or_list}")
    folder = _split_folder(root, split)
    label_index = {name: i for i, name in enumerate(label_names)}
    with open(csv_or_list, encoding="utf-8") as f:
        first = f.readline()
    if "youtube_id" in first and "," in first:
        return _read_csv(csv_or_list, folder, label_index)
    return _read_list(csv_or_list, folder, label_index, label_names)


def read_exclude_list(path: str | os.PathLike) -> set[str]:
    """Paths to skip, one per line (text after a tab is ignored, ``#`` starts a comment line); absolute paths and
    file names are both kept so a line matches either."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exclude list not found: {path}")
    keys: set[str] = set()
    with open(path, encoding="utf-8") as f:
        for text in f:
            text = text.split("\t", 1)[0].strip()
            if text and not text.startswith("#"):
                keys.add(os.path.abspath(text))
                keys.add(os.path.basename(text))
    return keys


def apply_exclude(entries: Iterable[VideoEntry], exclude: set[str]) -> list[VideoEntry]:
    """Entries whose absolute path or file name is not in ``exclude``."""
    return [e for e in entries if os.path.abspath(e.path) not in exclude and os.path.basename(e.path) not in exclude]


__all__ = ["VIDEO_EXTENSIONS", "VideoEntry", "apply_exclude", "index_video_files", "is_video_file",
           "load_label_names", "read_annotations", "read_exclude_list"]
