"""Exact resume after a real SIGKILL (no exception, no cleanup, no log flush) of a ``gnvideo fit`` process, with a
checkpoint every 4 steps (not every step): one process with 0 or 2 loader workers, and DDP on 2 CPU processes.
``test_resume_exact.py`` covers the in-process kill (0 and 2 workers, mid-epoch and at the epoch end)."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnvideo.run_logs import read_metrics

from .conftest import HERE, REPO, cli_args

# 24 training videos / 4 clips = 6 steps per epoch, 2 epochs; last.ckpt every 4 steps: steps 4 and 8 (epoch 1,
# batch 2 of 6), plus the end-of-epoch validation at step 6. The kill comes at step 10, so the resume starts at 8.
COMMON = ["--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1", "--model.dropout", "0.5",
          "--model.schedule", "cosine", "--model.warmup_fraction", "0.2", "--last_checkpoint.every_n_train_steps", "4"]


def _gnvideo(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    return subprocess.run([sys.executable, "-m", "gnvideo", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=300)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _losses(run: Path) -> dict[int, float]:
    """step -> train/loss (the later row of a re-logged step wins, as in gnvideo.run_logs)."""
    return read_metrics(run, "train/loss")


def _assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("workers, ddp", [(0, False), pytest.param(2, False, marks=pytest.mark.slow),
                                          pytest.param(0, True, marks=pytest.mark.slow)],
                         ids=["0_workers", "2_workers", "ddp_2_cpu_processes"])
def test_sigkill_mid_epoch_then_resume_is_bit_identical(synthetic_root, tmp_path, workers, ddp):
    args = [*COMMON, "--data.num_workers", str(workers)]
    if ddp:  # 2 ranks x 4 clips: 3 steps per epoch; 4 epochs keep the same 12 steps, last.ckpt at 4 and 8
        args += ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.max_epochs", "4"]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    _ok(_gnvideo("fit", *cli_args(synthetic_root, ref_runs, *args)))

    killed = _gnvideo("fit", *cli_args(synthetic_root, runs, *args), "--trainer.callbacks+=_train_probes.SigkillAtStep",
                      "--trainer.callbacks.step", "10")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run = runs / "tiny_r3d_bn" / "version_0"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    # mid-epoch: batch 2 of 6 of the second epoch (DDP: batch 2 of 3 of the third)
    assert last["global_step"] == 8 and last["epoch"] == (2 if ddp else 1)
    assert len(last["callbacks"]["ExactResume"]["ranks"]) == (2 if ddp else 1)  # RNG states of every rank
    assert sorted(_losses(run)) == list(range(9))  # every row before the killed step 9 is on disk
    killed_rows = _rows(run)

    _ok(_gnvideo("fit", *cli_args(synthetic_root, runs, *args), "--ckpt_path", "last"))
    assert not (runs / "tiny_r3d_bn" / "version_1").exists()  # resumed in the same run folder
    assert (run / "config.yaml").is_file() and (run / "config.attempt-2.yaml").is_file()  # both attempts' configs
    assert _rows(run)[:len(killed_rows)] == killed_rows  # the killed attempt's rows kept as they were

    ref_run = ref_runs / "tiny_r3d_bn" / "version_0"
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    ref = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == ref["global_step"] == 12
    _assert_same(final["state_dict"], ref["state_dict"], "state_dict")
    _assert_same(final["optimizer_states"], ref["optimizer_states"], "optimizer_states")
    _assert_same(final["lr_schedulers"], ref["lr_schedulers"], "lr_schedulers")
    losses, ref_losses = _losses(run), _losses(ref_run)
    assert sorted(ref_losses) == list(range(12))
    assert losses == ref_losses  # to the bit: the steps 8 and 9 trained again give the same losses
    val = read_metrics(run, "val/top1")  # a validation the killed attempt ran after step 8 is logged again
    assert val == read_metrics(ref_run, "val/top1") and len(val) == (4 if ddp else 2)
