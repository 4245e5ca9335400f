"""Whole-file jobs (decode every frame, transcode) in worker processes that a crashing or hanging decoder cannot
take down: the pool of ``gnvideo-check-videos`` and ``gnvideo-prepare-kinetics``.

Each worker runs one job at a time and reports progress through a shared clock (``progress()``, called by the job as
it decodes). A worker that dies is replaced and its job gets :func:`.errors.crash_reason` ("decoder crashed: signal 11
(SIGSEGV)"); one whose job makes no progress for ``timeout`` seconds is killed and replaced, and its job gets
:func:`.errors.hang_reason` ("decoder hung: no frames after 60 s"). Either way the other jobs go on and the pool ends.
Workers are forked (``multiprocessing``'s default context on Linux): import what the job needs before calling
:func:`isolated_map`, so no worker spends its first job's time limit on imports. No Python log callback is installed
in FFmpeg (``av.logging.set_level`` installs one, and it deadlocked FFmpeg's decoder threads on a corrupted h264 file).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any

from .errors import crash_reason, hang_reason, problem_reason

#: seconds a job may go without progress before its worker is killed (a clip decodes in well under a second)
DEFAULT_TIMEOUT = 60.0


def _serve(conn, fn: Callable, beat, quiet: bool) -> None:
    """Worker loop: receive ``(index, job)``, send back ``(index, result, None)`` or ``(index, None, reason)`` for a
    job that raised; None ends it."""
    if quiet:  # FFmpeg writes straight to fd 2; no Python callback (see the module docstring)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)

    def progress() -> None:
        beat.value = time.monotonic()

    while True:
        message = conn.recv()
        if message is None:
            return
        index, job = message
        try:
            conn.send((index, fn(job, progress), None))
        except Exception as err:  # noqa: BLE001 - a failed job is a verdict on its file, not the pool's end
            conn.send((index, None, problem_reason(err)))


class _Worker:
    def __init__(self, ctx, fn: Callable, quiet: bool) -> None:
        self.beat = ctx.RawValue("d", 0.0)  # time.monotonic() of the running job's last progress
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, fn, self.beat, quiet), daemon=True)
        self.proc.start()
        child.close()
        self.job: int | None = None

    def give(self, index: int, job: Any) -> None:
        self.beat.value = time.monotonic()
        self.job = index
        self.conn.send((index, job))

    def stop(self, kill: bool = False) -> int | None:
        """End the worker (at once when ``kill``); its exit code."""
        if kill:
            self.proc.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()
        return self.proc.exitcode


def isolated_map(fn: Callable[[Any, Callable[[], None]], Any], jobs: Sequence[Any], workers: int,
                 timeout: float = DEFAULT_TIMEOUT, quiet: bool = False) -> Iterator[tuple[int, Any, str | None]]:
    """Run ``fn(job, progress)`` for every job in ``workers`` isolated processes; yields as jobs finish, any order.

    Args:
        fn: the job; calls ``progress()`` at least every ``timeout`` seconds while it works (per decoded frame or
            chunk of frames); must be importable or inherited by a fork.
        jobs: the jobs' arguments.
        workers: processes (at least 1, at most one per job).
        timeout: seconds without progress before a job's worker is killed as hung.
        quiet: send the workers' stderr (FFmpeg's messages) to /dev/null.

    Yields:
        ``(index of the job, fn's result, None)``, or ``(index, None, reason)`` when the job raised (the
        :func:`.errors.problem_reason` of the exception), crashed its worker or hung.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
    if not jobs:
        return
    from .backends import import_decoders  # here: the data tools' --help imports this module, not torch

    import_decoders()  # in the parent, once: a forked worker's first job must not wait for them
    ctx = multiprocessing.get_context()
    pool = [_Worker(ctx, fn, quiet) for _ in range(max(1, min(int(workers), len(jobs))))]
    pending = deque(range(len(jobs)))
    try:
        while pending or any(w.job is not None for w in pool):
            for i, w in enumerate(pool):
                if w.job is None and pending:
                    try:
                        w.give(pending[0], jobs[pending[0]])
                        pending.popleft()
                    except OSError:  # died while idle: replace it, the job waits for the next worker
                        w.stop(kill=True)
                        pool[i] = _Worker(ctx, fn, quiet)
            busy = [w for w in pool if w.job is not None]
            if not busy:
                continue
            left = min(w.beat.value + timeout for w in busy) - time.monotonic()
            ready = wait([w.conn for w in busy], timeout=max(0.0, left))
            for i, w in enumerate(pool):
                if w.job is None:
                    continue
                if w.conn in ready:
                    try:
                        index, result, failure = w.conn.recv()
                    except (EOFError, OSError):
                        index, result, failure = w.job, None, crash_reason(w.stop(kill=True))
                        pool[i] = _Worker(ctx, fn, quiet)
                    else:
                        w.job = None
                    yield index, result, failure
                elif time.monotonic() - w.beat.value >= timeout:
                    index = w.job
                    w.stop(kill=True)
                    pool[i] = _Worker(ctx, fn, quiet)
                    yield index, None, hang_reason(timeout)
    finally:
        for w in pool:
            w.stop(kill=w.job is not None)


__all__ = ["DEFAULT_TIMEOUT", "isolated_map"]
