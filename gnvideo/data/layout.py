"""The Kinetics on-disk format, in one place: video extensions, CSV columns, split names, clip names and the rule for
``time_start`` / ``time_end`` and labels. The dataset (``annotations.py``) and ``data_prep/`` scripts all use these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ogv")
CSV_COLUMNS = ("label", "youtube_id", "time_start", "time_end")
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


__all__ = ["CSV_COLUMNS", "SPLIT_ALIASES", "VIDEO_EXTENSIONS", "check_label", "clip_stem", "is_video_file",
           "parse_time_span"]
