"""DDP on CPU (2 processes, gloo) through the real command line: per-rank BN statistics, exact multi-view test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gnvideo.cli import main

from .conftest import HERE, REPO, cli_args

DDP = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]


def _gnvideo(*args: str) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
    proc = subprocess.run([sys.executable, "-m", "gnvideo", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_fit_uses_per_rank_bn_and_test_matches_single_process(synthetic_root, tmp_path):
    runs, probe = tmp_path / "runs", tmp_path / "probe"
    _gnvideo("fit", *cli_args(synthetic_root, runs, *DDP), "--trainer.max_steps", "3",
             "--trainer.limit_val_batches", "0", "--trainer.callbacks+=_train_probes.BNProbe",
             "--trainer.callbacks.out_dir", str(probe))
    bn = [json.loads((probe / f"bn_rank{r}.json").read_text()) for r in (0, 1)]
    assert [b["world_size"] for b in bn] == [2, 2]
    for b in bn:
        assert len(b["records"]) == 2 and all(r["local_update"] for r in b["records"])
        assert all(r["batch"] == 4 for r in b["records"])  # each rank normalizes its own 4 clips
    assert bn[0]["records"][0]["batch_mean"] != pytest.approx(bn[1]["records"][0]["batch_mean"], rel=1e-3)

    ckpt = runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    # 12 videos x 2 clips x 3 crops = 72 views with 5 per batch: ranks get 36 views each, split across videos
    test_args = ["--data.clips_per_device", "5", "--data.test_num_crops", "3", "--ckpt_path", str(ckpt)]
    _gnvideo("test", *cli_args(synthetic_root, tmp_path / "runs_test", *DDP, *test_args))
    ddp_files = list((tmp_path / "runs_test").rglob("results*.json"))
    assert len(ddp_files) == 1  # written once, by rank zero
    ddp = json.loads(ddp_files[0].read_text())
    assert main(["test", *cli_args(synthetic_root, tmp_path / "runs_test1", *test_args)]) == 0
    single = json.loads((tmp_path / "runs_test1" / "tiny_r3d_bn" / "test_0" / "results.json").read_text())
    assert ddp["videos_scored"] == single["videos_scored"] == 12 and ddp["videos_skipped"] == 0
    for k in ("top1", "top5", "mean_class_accuracy"):
        assert ddp[k] == pytest.approx(single[k], abs=1e-9), k
    assert ddp["setting"]["devices"] == 2 and single["setting"]["devices"] == 2  # the training setting
