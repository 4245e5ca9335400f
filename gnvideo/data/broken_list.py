"""The run's broken videos: one list in the run folder, written the moment a video is found broken and read when the
run resumes, so a video found broken (a decoder crash or hang included) is never opened again in that run.

The file is an exclude list (``<absolute path><TAB><reason>`` per line, :func:`gnvideo.data.layout.exclude_line`), so
it also serves as ``data.exclude_list`` of later runs. Every process of a run (DataLoader workers, DDP ranks) adds to
the same file under an exclusive lock (``fcntl.flock``), which also makes each video named once, by the process that
found it first; lines are appended whole, so a kill mid-run leaves every earlier line readable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from .layout import exclude_line

try:
    import fcntl
except ImportError:  # not on Windows: no lock, a video may then be named once per process
    fcntl = None

FILE_NAME = "broken_videos.txt"


def parse_broken(text: str) -> dict[str, str]:
    """``{absolute path: reason}`` from the text of a broken-video list (lines cut by a kill are ignored)."""
    listed = {}
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or line.startswith("#") or not line.strip():
            continue
        path, _, reason = line.rstrip("\n").partition("\t")
        listed[os.path.abspath(path)] = reason
    return listed


class BrokenVideoList:
    """The broken-video list of one run folder (``<folder>/broken_videos.txt``).

    Args:
        path: the list file (created on the first :meth:`add`).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)

    def read(self) -> dict[str, str]:
        """``{absolute path: reason}`` of the videos listed so far ({} before the first)."""
        try:
            with open(self.path, encoding="utf-8") as f:
                return parse_broken(f.read())
        except FileNotFoundError:
            return {}

    def size(self) -> int:
        """Bytes in the file (-1 before it exists): grows with every video added, by any process."""
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return -1

    def add(self, video: str, reason: str) -> bool:
        """List ``video`` with ``reason`` unless it is listed already; True when this call listed it."""
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)  # released when the file closes
            f.seek(0)
            if os.path.abspath(video) in parse_broken(f.read()):
                return False
            f.write(exclude_line(video, reason))
            f.flush()
            return True

    def add_all(self, broken: Mapping[str, str]) -> None:
        """:meth:`add` each ``{path: reason}`` (one lock, one read)."""
        if not broken:
            return
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            f.seek(0)
            listed = parse_broken(f.read())
            f.write("".join(exclude_line(p, r) for p, r in broken.items() if os.path.abspath(p) not in listed))
            f.flush()

    def __repr__(self) -> str:
        return f"BrokenVideoList({self.path!r})"


__all__ = ["FILE_NAME", "BrokenVideoList", "parse_broken"]
