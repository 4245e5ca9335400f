"""Kinetics annotations as dataset entries: class names, the official CSV files and ``path label`` lists as (path,
class index) entries, and exclude lists applied to them (the file formats are :mod:`gnvideo.data.layout`'s).

Official CSV columns: ``label,youtube_id,time_start,time_end,split`` (extra columns such as ``is_cc`` are ignored;
labels with commas, quotes or apostrophes must be CSV-quoted). Video files are looked up under ``root/{split}`` (or
``root`` when that folder does not exist) in either layout, ``{label}/{youtube_id}_{start:06d}_{end:06d}.<ext>`` or
flat ``{youtube_id}_{start:06d}_{end:06d}.<ext>``, with any video extension found on disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import NamedTuple

from .layout import (
    VIDEO_EXTENSIONS,
    index_video_files,
    is_annotation_csv,
    is_excluded,
    is_video_file,
    read_annotation_csv,
    read_exclude_list,
    read_list_lines,
)

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


def _split_folder(root: str, split: str) -> str:
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root not found: {root}")
    folder = os.path.join(root, split)
    return folder if split and os.path.isdir(folder) else root


def _read_csv(csv_path: str, folder: str, label_index: dict[str, int], names: Sequence[str]) -> list[VideoEntry]:
    rows = read_annotation_csv(csv_path, names)
    files = index_video_files(folder)
    return [VideoEntry(files.get(r.stem) or os.path.join(folder, r.label, r.stem + ".mp4"), label_index[r.label])
            for r in rows]


def _read_list(list_path: str, root: str, label_index: dict[str, int], names: Sequence[str]) -> list[VideoEntry]:
    entries = []
    for line, path, label in read_list_lines(list_path):
        if not label:
            raise ValueError(f"{list_path}:{line}: malformed line, expected 'path label': {path!r}")
        if label.lstrip("-").isdigit():
            index = int(label)
            if not 0 <= index < len(names):
                raise ValueError(f"{list_path}:{line}: label index {index} out of range [0, {len(names)})")
        elif label in label_index:
            index = label_index[label]
        else:
            raise ValueError(f"{list_path}:{line}: unknown label {label!r} (not among the {len(names)} class names)")
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
    if is_annotation_csv(csv_or_list):
        return _read_csv(csv_or_list, folder, label_index, label_names)
    return _read_list(csv_or_list, folder, label_index, label_names)


def apply_exclude(entries: Iterable[VideoEntry], exclude: set[str]) -> list[VideoEntry]:
    """Entries whose absolute path or file name is not in ``exclude`` (keys from :func:`read_exclude_list`)."""
    return [e for e in entries if not is_excluded(e.path, exclude)]


__all__ = ["VIDEO_EXTENSIONS", "VideoEntry", "apply_exclude", "is_video_file", "load_label_names", "read_annotations",
           "read_exclude_list"]
