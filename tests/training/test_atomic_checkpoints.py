"""Atomic checkpoint writes: a process killed while it writes a checkpoint leaves the previous one whole, the partial
file is ignored and cleaned up, and ``--ckpt_path last`` skips a damaged checkpoint instead of failing on it."""

from __future__ import annotations

import subprocess
import sys

import torch

from gnvideo.training.atomic_checkpoints import AtomicCheckpointIO, checkpoint_problem, partial_files
from gnvideo.training.run_folders import find_checkpoint

from .conftest import HERE, REPO

KILLED_WRITE = """
import sys
sys.path[:0] = [{here!r}, {repo!r}]
import torch
from _train_probes import KillDuringSave
from gnvideo.training.atomic_checkpoints import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"step": 1, "w": torch.ones(1000)}}, sys.argv[1])
KillDuringSave(step=0).on_save_checkpoint(None, None, None)  # the next torch.save writes half, then SIGKILL
io.save_checkpoint({{"step": 2, "w": torch.zeros(1000)}}, sys.argv[1])
"""


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE.format(here=str(HERE), repo=str(REPO)), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (partial,) = partial_files(path)  # the killed write's half file, hidden next to the checkpoint
    assert 0 < partial.stat().st_size and checkpoint_problem(partial) is not None
    assert checkpoint_problem(path) is None
    assert torch.load(path, weights_only=True)["step"] == 1  # the previous checkpoint, whole
    assert find_checkpoint(tmp_path, "last", run=tmp_path) == path  # the partial file is no candidate

    AtomicCheckpointIO().save_checkpoint({"step": 3}, path)  # the next save removes the leftover
    assert partial_files(path) == [] and torch.load(path, weights_only=True)["step"] == 3


def test_checkpoint_problem_names_what_is_wrong(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.ones(100)}, good)
    assert checkpoint_problem(good) is None
    data = good.read_bytes()
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(data[: len(data) // 2])
    assert "truncated" in checkpoint_problem(cut)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    assert checkpoint_problem(empty) == "empty file"
    assert "unreadable" in checkpoint_problem(tmp_path / "missing.ckpt")


def test_last_skips_a_damaged_newer_checkpoint(tmp_path, capsys):
    run = tmp_path / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    older = run / "checkpoints" / "last.ckpt"
    torch.save({"step": 1}, older)
    newer = run / "checkpoints" / "last-v1.ckpt"  # e.g. copied by hand and cut short
    newer.write_bytes(older.read_bytes()[:40])
    assert find_checkpoint(tmp_path, "last") == older
    assert f"skipping checkpoint {newer}: truncated" in capsys.readouterr().err
    older.write_bytes(b"")
    assert find_checkpoint(tmp_path, "last") is None  # only damaged ones: none to resume from


def test_remote_paths_use_lightnings_writer():
    remote = "memory://ckpt/last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, remote)
    assert AtomicCheckpointIO().load_checkpoint(remote)["step"] == 1
