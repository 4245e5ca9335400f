"""Exact mid-epoch resume: a fit killed in epoch 2 and resumed with ``--ckpt_path last`` ends bit-identical to an
uninterrupted fit (weights, optimizer and scheduler state, logged train losses), with dropout, with 0 and 2 workers,
and its metrics.csv equals the uninterrupted one's but for wall-clock columns: the interrupted epoch's ``*_epoch``
metrics, the clip and batch counters, every row."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from gnvideo.cli import main
from gnvideo.training.run_logs import read_metrics

from .conftest import assert_same_metrics, cli_args

# 24 training videos / 4 clips = 6 steps per epoch, 2 epochs; last.ckpt after every step; dropout 0.5 (model head)
# KillAtStep raises after step k, before its checkpoint and its log row: the newest last.ckpt is step k - 1.
# k = 9: mid-epoch 2 (2 of its 6 batches done); k = 7: the checkpoint written at the end of epoch 1; k = 4: mid-epoch 1,
# so the resumed attempt also runs epoch 1's validation before epoch 2. "validation": killed when epoch 1's validation
# starts, after its last step (6): that step's checkpoint waits for the epoch's end, so the newest is step 5 and the
# resumed attempt runs step 6 and the validation again (from a checkpoint of step 6 Lightning would skip them).
STEPS_PER_EPOCH = 6


def _common(workers: int) -> list[str]:
    return ["--data.clips_per_device", "4", "--data.num_workers", str(workers), "--trainer.max_epochs", "2",
            "--model.dropout", "0.5", "--model.schedule", "cosine", "--model.warmup_fraction", "0.2",
            "--last_checkpoint.every_n_train_steps", "1", "--trainer.num_sanity_val_steps", "1"]


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(f)]


def _assert_equal_tensors(a, b, where: str) -> int:
    """torch.equal on every tensor of two nested structures (same keys, same non-tensor values); returns the count."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
        return 1
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        return sum(_assert_equal_tensors(a[k], b[k], f"{where}.{k}") for k in a)
    if isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        return sum(_assert_equal_tensors(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b)))
    assert a == b, where
    return 0


@pytest.mark.parametrize(("workers", "kill_at"), [(0, 9), (2, 9), (0, 7), (2, 4), (0, "validation")])
def test_resume_mid_epoch_is_bit_identical(synthetic_root, tmp_path, workers, kill_at):
    common = _common(workers)
    ref_runs, runs = tmp_path / "ref", tmp_path / "runs"
    assert main(["fit", *cli_args(synthetic_root, ref_runs, *common)]) == 0
    ref_run = ref_runs / "tiny_r3d_bn" / "version_0"

    at_validation = kill_at == "validation"
    step = STEPS_PER_EPOCH if at_validation else kill_at
    with pytest.raises(RuntimeError, match="simulated kill"):
        main(["fit", *cli_args(synthetic_root, runs, *common), "--trainer.callbacks+=_train_probes.KillAtStep",
              "--trainer.callbacks.step", str(step), "--trainer.callbacks.at_validation", str(at_validation)])
    run = runs / "tiny_r3d_bn" / "version_0"
    killed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt_step = STEPS_PER_EPOCH - 1 if at_validation else kill_at - 1
    assert killed["global_step"] == ckpt_step and killed["epoch"] == (ckpt_step - 1) // STEPS_PER_EPOCH
    killed_rows = _rows(run)
    assert sorted(read_metrics(run, "train/loss")) == list(range(step if at_validation else kill_at - 1))

    assert main(["fit", *cli_args(synthetic_root, runs, *common), "--ckpt_path", "last"]) == 0
    assert not (runs / "tiny_r3d_bn" / "version_1").exists()  # resumed in the same run folder

    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ref = torch.load(ref_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == ref["global_step"] == 2 * STEPS_PER_EPOCH
    n = _assert_equal_tensors(final["state_dict"], ref["state_dict"], "state_dict")
    assert n == len(ref["state_dict"]) > 10
    assert _assert_equal_tensors(final["optimizer_states"], ref["optimizer_states"], "optimizer") > 10
    _assert_equal_tensors(final["lr_schedulers"], ref["lr_schedulers"], "lr_schedulers")
    assert final["hyper_parameters"]["dropout"] == 0.5

    # every train loss equal to the bit (the CSV holds Python's repr of the float), steps 0..11 all present
    ref_loss, loss = read_metrics(ref_run, "train/loss"), read_metrics(run, "train/loss")
    assert sorted(ref_loss) == list(range(2 * STEPS_PER_EPOCH))
    assert loss == ref_loss
    # the killed attempt's rows up to its checkpoint are kept as they were; the rest were logged again
    covered = killed["gnvideo_logs"]["metrics_rows"]
    rows = _rows(run)
    assert 0 < covered <= len(killed_rows) and rows[:covered] == killed_rows[:covered]
    assert_same_metrics(run, ref_run)
    # each attempt's config kept
    assert (run / "config.yaml").is_file() and (run / "config.attempt-2.yaml").is_file()
