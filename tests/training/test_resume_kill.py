"""Exact resume after a real SIGKILL (no cleanup, no log flush), after a SIGKILL in the middle of writing a
checkpoint, and under DDP on 2 CPU processes: the resumed fit ends bit-identical to an uninterrupted one (weights,
optimizer state, logged train losses) and its metrics.csv equals the uninterrupted one's. Complements
test_resume_exact.py, whose kill is an exception in the training process."""

from __future__ import annotations

import pytest
import torch

from gnvideo.cli import main
from gnvideo.training.atomic_checkpoints import partial_files
from gnvideo.training.run_logs import read_metrics

from .conftest import assert_same_metrics, cli_args, gnvideo_process

# 24 training videos / 4 clips per rank; last.ckpt every 2 steps; the kill comes after step 9, so the newest
# checkpoint is step 8: mid-epoch. Dropout on, cosine LR with warm-up.
COMMON = ["--data.clips_per_device", "4", "--trainer.limit_val_batches", "0", "--model.dropout", "0.5",
          "--model.schedule", "cosine", "--model.warmup_fraction", "0.2", "--last_checkpoint.every_n_train_steps", "2",
          "--trainer.num_sanity_val_steps", "0"]
KILL = ["--trainer.callbacks+=_train_probes.KillAtStep", "--trainer.callbacks.step", "9"]


def _gnvideo(*args: str, rc: int = 0) -> None:
    gnvideo_process(*args, rc=rc)  # some runs below run in this process: same thread count


def _same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def _compare(run, ref_run, steps: int) -> None:
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ref = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == ref["global_step"] == steps
    _same(final["state_dict"], ref["state_dict"], "state_dict")
    _same(final["optimizer_states"], ref["optimizer_states"], "optimizer_states")
    _same(final["lr_schedulers"], ref["lr_schedulers"], "lr_schedulers")
    loss, ref_loss = read_metrics(run, "train/loss"), read_metrics(ref_run, "train/loss")
    assert sorted(ref_loss) == list(range(steps)) and loss == ref_loss


@pytest.fixture(scope="module")
def reference_run(synthetic_root, tmp_path_factory):
    """The uninterrupted fit that the killed-and-resumed ones below must equal: 2 epochs of 6 steps, 2 workers."""
    runs = tmp_path_factory.mktemp("ref")
    assert main(["fit", *cli_args(synthetic_root, runs, *COMMON_2_WORKERS)]) == 0
    return runs / "tiny_r3d_bn" / "version_0"


COMMON_2_WORKERS = [*COMMON, "--trainer.max_epochs", "2", "--data.num_workers", "2"]  # 6 steps per epoch


def test_sigkill_mid_epoch_then_resume_is_bit_identical(synthetic_root, tmp_path, reference_run):
    runs = tmp_path / "runs"
    _gnvideo("fit", *cli_args(synthetic_root, runs, *COMMON_2_WORKERS, *KILL), "--trainer.callbacks.sigkill", "true",
             rc=-9)
    run = runs / "tiny_r3d_bn" / "version_0"
    killed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert killed["global_step"] == 8 and killed["epoch"] == 1  # 2 of epoch 1's 6 batches done
    # every row logged before the SIGKILL is on disk: step 7's loss, logged right after the step-8 checkpoint (and
    # never again), and the LR of step 8, logged after it
    assert sorted(read_metrics(run, "train/loss")) == list(range(8))
    assert sorted(read_metrics(run, "train/lr/decay")) == list(range(9))
    assert main(["fit", *cli_args(synthetic_root, runs, *COMMON_2_WORKERS), "--ckpt_path", "last"]) == 0
    _compare(run, reference_run, 12)
    assert_same_metrics(run, reference_run)  # the rows past the checkpoint logged again replaced, none lost


def test_sigkill_while_writing_a_checkpoint_then_resume_is_bit_identical(synthetic_root, tmp_path, reference_run):
    """Checkpoints every 2 steps: the process dies halfway through writing the step-8 one. last.ckpt is the whole
    step-6 one, and the resume ends as the reference."""
    runs = tmp_path / "runs"
    kill = ["--trainer.callbacks+=_train_probes.KillDuringSave", "--trainer.callbacks.step", "8"]
    _gnvideo("fit", *cli_args(synthetic_root, runs, *COMMON_2_WORKERS, *kill), rc=-9)
    last = runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt"
    assert len(partial_files(last)) == 1  # the write cut short, next to the checkpoint
    assert torch.load(last, weights_only=True)["global_step"] == 6
    assert main(["fit", *cli_args(synthetic_root, runs, *COMMON_2_WORKERS), "--ckpt_path", "last"]) == 0
    assert partial_files(last) == []
    _compare(last.parent.parent, reference_run, 12)
    assert_same_metrics(last.parent.parent, reference_run)


@pytest.mark.slow
def test_ddp_kill_mid_epoch_then_resume_is_bit_identical(synthetic_root, tmp_path):
    """24 videos / (2 ranks x 4 clips) = 3 steps per epoch, 4 epochs; the step-8 checkpoint is 2 of 3 batches into
    epoch 2 on each rank."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    common = [*COMMON, "--trainer.max_epochs", "4", "--data.num_workers", "0", *ddp]
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    _gnvideo("fit", *cli_args(synthetic_root, ref_runs, *common))
    _gnvideo("fit", *cli_args(synthetic_root, runs, *common, *KILL), rc=1)
    run = runs / "tiny_r3d_bn" / "version_0"
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 8
    _gnvideo("fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last")
    _compare(run, ref_runs / "tiny_r3d_bn" / "version_0", 12)
