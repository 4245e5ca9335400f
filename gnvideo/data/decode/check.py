"""Whole-file checks: decode every frame of a video with the readers the datasets use (``check_videos``,
``prepare_kinetics``); the top of the decode layer."""

from __future__ import annotations

import os
from collections.abc import Callable

from .backends import open_video
from .errors import problem_reason


def video_problem(path: str | os.PathLike, backend: str = "auto", chunk: int = 256,
                  progress: Callable[[], None] | None = None) -> str | None:
    """Decode every frame of a video with the readers the datasets use; None when it is fine, else the reason.

    Args:
        path: the file.
        backend: "auto", "decord" or "pyav" (see :func:`gnvideo.data.decode.open_video`).
        chunk: frames decoded per read (bounds memory).
        progress: called after each chunk (the hang clock of :func:`.pool.isolated_map`).
    """
    try:
        with open_video(path, backend=backend) as reader:
            start = 0
            while start < reader.frame_count:
                stop = min(start + chunk, reader.frame_count)
                frames = reader.frames(range(start, stop))
                if frames.ndim != 4 or frames.shape[0] != stop - start or frames.shape[-1] != 3:
                    return f"unexpected frame batch shape {tuple(frames.shape)}"
                start = stop
                if progress is not None:
                    progress()
    except Exception as err:  # noqa: BLE001 - every failure is a verdict on this file
        return problem_reason(err)
    return None


__all__ = ["video_problem"]
