"""Run folders of an experiment (``{root}/{run_name}/version_N``): their checkpoints and their attempts.

Each attempt of a fit (the first start, every resume, every requeued SLURM job) adds lines to the run's
``attempts.jsonl``: one when it starts (time, host, the checkpoint it resumed from, ``SLURM_JOB_ID`` and
``SLURM_RESTART_COUNT``) and one when it ends (``finished``, ``preempted`` with the signal, the step and whether the job
was requeued, or ``failed`` with the error). A requeued SLURM job finds its run by that job id
(:func:`run_of_slurm_job`).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from gnvideo.training.atomic_checkpoints import checkpoint_problem

__all__ = ["ATTEMPTS_FILE", "append_attempt", "find_checkpoint", "read_attempts", "run_of_slurm_job", "versions"]

ATTEMPTS_FILE = "attempts.jsonl"


def versions(exp_dir: Path) -> list[Path]:
    """The ``version_N`` folders of an experiment, oldest (lowest N) first."""
    runs = [p for p in Path(exp_dir).glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    return sorted(runs, key=lambda p: int(p.name[8:]))


def _loadable_newest_first(run: Path, pattern: str) -> list[Path]:
    """``run``'s checkpoints matching ``pattern``, newest first, those that cannot be loaded left out (warned)."""
    found = sorted((run / "checkpoints").glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    good = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            good.append(path)
        else:
            print(f"gnvideo: warning: skipping checkpoint {path}: {problem}", file=sys.stderr)
    return good


def find_checkpoint(exp_dir: Path, which: str, run: Path | None = None) -> Path | None:
    """Newest loadable ``last*.ckpt`` (which="last") or ``best*.ckpt`` (which="best") of the newest fit run that has
    one (of ``run`` alone when given).

    A damaged file (truncated by a kill during a copy, empty) is skipped with a warning, so resuming never stops on a
    half-written checkpoint; a run whose only checkpoints are damaged counts as having none.
    """
    pattern = "last*.ckpt" if which == "last" else "best*.ckpt"
    for folder in [run] if run is not None else reversed(versions(exp_dir)):
        good = _loadable_newest_first(folder, pattern)
        if good:
            return good[0]
    return None


def read_attempts(run: Path) -> list[dict]:
    """The records of ``run``'s ``attempts.jsonl`` (lines that are not JSON objects are skipped)."""
    path = Path(run) / ATTEMPTS_FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        if isinstance(record, dict):
            out.append(record)
    return out


def append_attempt(run: Path, record: dict) -> None:
    """Append ``record`` (with the time, host and process id) to ``run``'s ``attempts.jsonl`` (call on rank zero)."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(), "pid": os.getpid(),
              **record}
    with open(run / ATTEMPTS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_of_slurm_job(exp_dir: Path, job_id: str) -> Path | None:
    """The newest run of the experiment that an attempt of SLURM job ``job_id`` started in, else None."""
    for run in reversed(versions(exp_dir)):
        if any(r.get("event") == "start" and str(r.get("slurm_job_id")) == str(job_id) for r in read_attempts(run)):
            return run
    return None
