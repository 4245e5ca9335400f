"""Shared fixtures of the training tests: a tiny synthetic Kinetics-layout dataset made once per session."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # for the class paths "_train_probes.KillAtStep" / "_train_probes.BNProbe"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """6 classes x 4 train + 2 val videos, 40-48 px short side, 1.5-2 s at 12 fps (seconds to make)."""
    from gnvideo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_classes=6, videos_per_class=4, val_videos_per_class=2, seed=0, workers=0,
                           short_side_range=(40, 48), fps_range=(12, 12), duration_range=(1.5, 2.0))
    return root


def cli_args(root: Path, runs: Path, *extra: str, config: str = "configs/synthetic/tiny_r3d_bn.yaml") -> list[str]:
    """Arguments after the subcommand: a synthetic config shrunk to 32 px crops and 2 x 1 test views."""
    return [
        "--config", str(REPO / config),
        "--data.root", str(root), "--data.num_workers", "0", "--data.clips_per_device", "4",
        "--data.train_short_side_range", "[32,40]", "--data.train_crop_size", "32", "--data.val_short_side", "32",
        "--data.val_crop_size", "32", "--data.test_short_side", "32",
        "--data.test_crop_size", "32", "--data.test_num_clips", "2", "--data.test_num_crops", "1",
        "--trainer.default_root_dir", str(runs), "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1", "--trainer.accelerator", "cpu",
        *extra,
    ]


#: columns of metrics.csv that measure wall-clock time (they differ between any two runs)
WALL_CLOCK = ("time", "_per_sec")


def metrics_rows(run: Path) -> tuple[list[str], list[dict]]:
    """A run's metrics.csv: its header and its rows without the wall-clock columns (cells as written)."""
    with open(Path(run) / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [{k: v for k, v in row.items() if not k.endswith(WALL_CLOCK)} for row in reader]
        return list(reader.fieldnames or []), rows


def assert_same_metrics(run: Path, ref_run: Path) -> None:
    """metrics.csv of ``run`` equals that of ``ref_run`` (same columns, same rows in the same order) except for the
    wall-clock columns."""
    header, rows = metrics_rows(run)
    ref_header, ref_rows = metrics_rows(ref_run)
    assert header == ref_header
    def filled(row: dict) -> dict:
        return {k: v for k, v in row.items() if v}

    for i, (row, ref) in enumerate(zip(rows, ref_rows)):
        assert row == ref, f"row {i}: {filled(row)} != {filled(ref)}"
    assert len(rows) == len(ref_rows)


def gnvideo_process(*args: str, env: dict | None = None, rc: int = 0, **popen) -> subprocess.CompletedProcess:
    """``python -m gnvideo ARGS`` in a new process (this folder importable, this process's thread count: another
    one changes float sums) that must exit with ``rc``."""
    import torch

    env = {**os.environ, **(env or {}), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    proc = subprocess.run([sys.executable, "-m", "gnvideo", *args], env=env, cwd=str(REPO), capture_output=True,
                          text=True, timeout=600, **popen)
    assert proc.returncode == rc, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc
