"""Exact resume: kill a fit mid-epoch, resume with ``--ckpt_path last``, compare with an uninterrupted run bitwise."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gnvideo.cli import main

from .conftest import HERE, REPO, cli_args

# 24 training videos / 4 clips = 6 steps per epoch, 2 epochs; last.ckpt every 2 steps; the kill comes after step 9,
# so the newest checkpoint is step 8: epoch 1, 2 of its 6 batches done. Dropout on, cosine LR with warm-up.
COMMON = ["--data.clips_per_device", "4", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "0",
          "--model.dropout", "0.5", "--model.schedule", "cosine", "--model.warmup_fraction", "0.2",
          "--last_checkpoint.every_n_train_steps", "2", "--trainer.num_sanity_val_steps", "0"]
KILL = ["--trainer.callbacks+=_train_probes.KillAtStep", "--trainer.callbacks.step", "9"]


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def _losses(run: Path) -> dict[int, str]:
    """step -> train/loss as written (the CSV text, so equality is exact); a repeated step must repeat its value."""
    out: dict[int, str] = {}
    for r in _rows(run):
        if r.get("train/loss"):
            step = int(r["step"])
            assert out.setdefault(step, r["train/loss"]) == r["train/loss"], f"step {step} logged twice, differently"
    return out


def _assert_same_state(a: dict, b: dict, where: str = "") -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize(("workers", "how"), [(0, "raise"), (2, "raise"), (0, "sigkill")])
def test_kill_mid_epoch_and_resume_is_bit_identical(synthetic_root, tmp_path, workers, how):
    common = [*COMMON, "--data.num_workers", str(workers)]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    assert main(["fit", *cli_args(synthetic_root, ref_runs, *common)]) == 0
    if how == "raise":
        with pytest.raises(RuntimeError, match="simulated kill"):
            main(["fit", *cli_args(synthetic_root, runs, *common, *KILL)])
    else:  # a real SIGKILL of the training process
        # same thread count as this process (a different one changes float sums, and the reference runs here)
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()),
                   PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
        proc = subprocess.run([sys.executable, "-m", "gnvideo", "fit", *cli_args(synthetic_root, runs, *common, *KILL),
                               "--trainer.callbacks.sigkill", "true"], env=env, cwd=str(REPO), capture_output=True,
                              timeout=300)
        assert proc.returncode == -9, proc.stderr[-2000:]
    run = runs / "tiny_r3d_bn" / "version_0"
    killed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert killed["global_step"] == 8 and killed["epoch"] == 1  # mid-epoch: 2 of epoch 1's 6 batches done
    assert killed["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches_done": 2, "batch_size": 4}]
    assert "rng_states_rank0" in killed
    before = _losses(run)
    assert set(range(8)) <= set(before)  # every step up to the checkpoint was flushed before the kill

    assert main(["fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last"]) == 0
    assert not (runs / "tiny_r3d_bn" / "version_1").exists()  # resumed in the same run folder
    assert (run / "config.yaml").is_file() and (run / "config_1.yaml").is_file()  # each attempt's config kept

    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    ref = torch.load(ref_runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == ref["global_step"] == 12
    losses, ref_losses = _losses(run), _losses(ref_runs / "tiny_r3d_bn" / "version_0")
    assert sorted(ref_losses) == list(range(12))
    assert losses == ref_losses  # every step's loss, those from before the kill included, exactly equal
    _assert_same_state(final["state_dict"], ref["state_dict"], "state_dict")
    _assert_same_state(final["optimizer_states"], ref["optimizer_states"], "optimizer_states")
    _assert_same_state(final["lr_schedulers"], ref["lr_schedulers"], "lr_schedulers")
    assert all(losses[s] == v for s, v in before.items())  # rows written before the kill are still there


def _gnvideo(*args: str, ok: bool = True) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "gnvideo", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stdout[-2000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_kill_mid_epoch_and_resume_is_bit_identical(synthetic_root, tmp_path):
    """2 CPU processes: 24 videos / (2 ranks x 4 clips) = 3 steps per epoch, 4 epochs; killed after step 9, the
    newest checkpoint is step 8 (epoch 2, 2 of 3 batches done on each rank)."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    common = [*COMMON, "--trainer.max_epochs", "4", *ddp]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    _gnvideo("fit", *cli_args(synthetic_root, ref_runs, *common))
    _gnvideo("fit", *cli_args(synthetic_root, runs, *common, *KILL), ok=False)
    run = runs / "tiny_r3d_bn" / "version_0"
    killed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert killed["global_step"] == 8 and "rng_states_rank1" in killed
    _gnvideo("fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last")
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    ref = torch.load(ref_runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert final["global_step"] == ref["global_step"] == 12
    _assert_same_state(final["state_dict"], ref["state_dict"], "state_dict")
    _assert_same_state(final["optimizer_states"], ref["optimizer_states"], "optimizer_states")
    assert _losses(run) == _losses(ref_runs / "tiny_r3d_bn" / "version_0")
