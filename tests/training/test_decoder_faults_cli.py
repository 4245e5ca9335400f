"""``gnvideo fit/test/predict`` survive a decoder that crashes (SIGSEGV) or hangs on one file: the fault is injected
at libc's open() by an LD_PRELOAD shim (tests/decoder_faults.c), in the real command with DataLoader workers. The
file is named once with its reason, counted, listed in the run folder, and never opened again after a resume."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from decoder_faults import fault_env, opens, run

from .conftest import cli_args

pytestmark = pytest.mark.slow

TIMEOUT = "4"  # data.decode_timeout of these runs, seconds


def _named(output: str, path: Path) -> list[str]:
    """The reasons ``path`` was named with ("skipping broken video PATH (REASON)")."""
    return re.findall(r"skipping broken video " + re.escape(str(path)) + r" \((.*)\)\n", output)


@pytest.fixture(scope="module")
def faulty(synthetic_root, tmp_path_factory):
    """A copy of the synthetic dataset and the files whose decoder crashes or hangs (two train, two val)."""
    root = tmp_path_factory.mktemp("faulty") / "data"
    shutil.copytree(synthetic_root, root)
    train, val = sorted((root / "train").rglob("*.mp4")), sorted((root / "val").rglob("*.mp4"))
    files = {"train_crash": train[1], "train_hang": train[6], "val_crash": val[2], "val_hang": val[9]}
    log = root.parent / "opens.txt"
    env = fault_env(crash=[files["train_crash"], files["val_crash"]], hang=[files["train_hang"], files["val_hang"]],
                    log=log)
    return root, files, env, log


@pytest.fixture(scope="module")
def fitted(faulty, tmp_path_factory):
    """One epoch with 2 workers, then resumed for a second; returns the run folder and both outputs."""
    root, files, env, log = faulty
    runs = tmp_path_factory.mktemp("runs")
    common = cli_args(root, runs, "--data.num_workers", "2", "--data.decode_timeout", TIMEOUT,
                      "--trainer.limit_val_batches", "2", "--data.val_short_side", "32")
    first = run(["-m", "gnvideo", "fit", *common, "--trainer.max_epochs", "1"], env)
    opens_after_first = {k: opens(log, p.name) for k, p in files.items()}
    resumed = run(["-m", "gnvideo", "fit", *common, "--trainer.max_epochs", "2", "--ckpt_path", "last"], env)
    return runs / "tiny_r3d_bn" / "version_0", first, resumed, opens_after_first


def test_fit_with_workers_survives_and_names_each_file_once(faulty, fitted):
    _, files, _, _ = faulty
    run_dir, first, _, opened = fitted
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert _named(out, files["train_crash"]) == ["decoder crashed: signal 11 (SIGSEGV)"]
    assert _named(out, files["train_hang"]) == [f"decoder hung: no frames after {TIMEOUT} s"]
    assert opened["train_crash"] == opened["train_hang"] == 1
    assert "DataLoader worker" not in out and "Segmentation fault" not in out
    assert re.search(r"train: 2 broken videos, \d+ samples drawn again", out), out[-3000:]
    listed = dict(line.split("\t") for line in (run_dir / "broken_videos.txt").read_text().splitlines())
    assert listed[str(files["train_crash"])] == "decoder crashed: signal 11 (SIGSEGV)"
    assert listed[str(files["train_hang"])] == f"decoder hung: no frames after {TIMEOUT} s"
    steps = [int(r["step"]) for r in map(dict, _rows(run_dir)) if r.get("train/loss")]
    assert steps[:6] == list(range(6))  # 24 videos / 4 clips: every batch of the epoch trained


def test_resumed_fit_never_opens_them_again(faulty, fitted):
    root, files, _, log = faulty
    run_dir, _, resumed, opened = fitted
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    for key in ("train_crash", "train_hang"):
        assert opens(log, files[key].name) == opened[key] == 1, key
        assert _named(out, files[key]) == []
    assert re.search(r"train: 2 broken videos, \d+ samples drawn again", out), out[-3000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    carried = state["KineticsDataModule"]["broken_videos"]
    assert {str(files["train_crash"]), str(files["train_hang"])} <= set(carried)


def _rows(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_test_and_predict_count_them_as_skipped(faulty, fitted, tmp_path):
    root, files, env, _ = faulty
    run_dir = fitted[0]
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    common = cli_args(root, tmp_path, "--data.decode_timeout", TIMEOUT, "--ckpt_path", str(ckpt))
    test = run(["-m", "gnvideo", "test", *common, "--data.num_workers", "2"], env)
    assert test.returncode == 0, test.stderr[-3000:]
    out = test.stdout + test.stderr
    assert _named(out, files["val_crash"]) == ["decoder crashed: signal 11 (SIGSEGV)"]
    assert _named(out, files["val_hang"]) == [f"decoder hung: no frames after {TIMEOUT} s"]
    results = json.loads((tmp_path / "tiny_r3d_bn" / "test_0" / "results.json").read_text())
    assert (results["videos_scored"], results["videos_skipped"]) == (10, 2)

    good = sorted((root / "val").rglob("*.mp4"))[0]
    videos = [good, files["val_crash"], files["val_hang"]]
    predict = run(["-m", "gnvideo", "predict", *common, "--data.num_workers", "0",  # the main process's own child
                   "--data.predict_files", "[" + ",".join(map(str, videos)) + "]"], env)
    assert predict.returncode == 0, predict.stderr[-3000:]
    out = predict.stdout + predict.stderr
    assert _named(out, files["val_crash"]) == ["decoder crashed: signal 11 (SIGSEGV)"]
    written = json.loads((tmp_path / "tiny_r3d_bn" / "predict_0" / "predictions.json").read_text())
    assert [p["file"] for p in written["predictions"]] == [str(good)]
    assert sorted(written["skipped"]) == sorted(map(str, videos[1:]))
