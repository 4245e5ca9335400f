"""``gnvideo-check-videos --keyframes``: keyframe facts of many videos in worker processes, and the report's lines
(the summary itself is ``gnvideo.data.random_access.summarize``)."""

from __future__ import annotations

import os

from gnvideo.data.decode.pool import DEFAULT_TIMEOUT, isolated_map


def _facts_job(job: tuple[str, int, int], progress) -> dict:
    from gnvideo.data.random_access import inspect_video

    return inspect_video(*job)


def keyframe_facts(paths: list[str], num_frames: int = 32, sampling_rate: int = 2, workers: int | None = None,
                   progress: bool = False, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    """:func:`gnvideo.data.random_access.inspect_video` of every file, in input order, in ``workers`` isolated
    processes (None = all CPUs, 0 = in this process); header and packet reads only, nothing is decoded. A file whose
    read crashes its worker or takes longer than ``timeout`` seconds is ``{"path", "problem"}`` like an unreadable
    header (``gnvideo.data.decode.pool``, as the decoding check)."""
    from gnvideo.data.random_access import inspect_video

    workers = (os.cpu_count() or 1) if workers is None else workers
    bar = task = None
    if progress and paths:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("reading keyframes"), BarColumn(), MofNCompleteColumn())
        task = bar.add_task("keyframes", total=len(paths))
        bar.start()
    found: dict[int, dict] = {}
    try:
        if workers <= 0:
            results = ((i, inspect_video(p, num_frames, sampling_rate), None) for i, p in enumerate(paths))
        else:
            jobs = [(p, num_frames, sampling_rate) for p in paths]
            results = isolated_map(_facts_job, jobs, workers, timeout, quiet=True)
        for index, facts, failure in results:
            found[index] = facts if failure is None else {"path": paths[index], "problem": failure}
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    return [found[i] for i in range(len(paths))]


def print_keyframe_summary(summary: dict, facts: list[dict], root: str | None) -> None:
    """The ``--keyframes`` report, a few lines."""
    from gnvideo.data.random_access import REENCODE_COMMAND

    clip = summary["clip"]
    print(f"keyframes of {summary['videos']} videos ({summary['unreadable']} unreadable), clip "
          f"{clip['num_frames']}x{clip['sampling_rate']} (span {clip['span']} frames):")
    for f in facts:
        if "problem" in f:
            print(f"  unreadable: {f['path']}: {f['problem']}")
    if "max_interval" not in summary:
        return
    mi = summary["max_interval"]
    print(f"  longest keyframe interval per video: median {mi['median']:g}, 90 % <= {mi['p90']}, max {mi['max']} "
          "frames; videos per interval:")
    print("    " + "  ".join(f"{name}: {n}" for name, n in mi["histogram"].items()))
    print(f"  frames decoded per random training clip: {summary['frames_decoded_per_clip']:.1f} on average for the "
          f"{clip['num_frames']} it uses ({summary['decoded_per_frame_used']:.2f} per frame used)")
    print("  encoders: " + "; ".join(f"{name}: {n}" for name, n in summary["encoders"].items()))
    if summary["slow"]:
        print(f"  keyframes far above the clip span: re-encode in place (resumable) with: "
              f"{REENCODE_COMMAND.format(root=root or 'ROOT')}")


__all__ = ["keyframe_facts", "print_keyframe_summary"]
