"""A new user's folder of good and broken videos through check_videos, prepare_kinetics, fit, test and predict
(issue 10, "Must show"): no hang, no traceback, every bad file named once with its reason."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from prep_helpers import write_raw

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 240  # seconds per step: a hang fails the test instead of blocking it


def _run(*argv: str, cwd: Path) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    out = done.stdout + done.stderr
    assert "Traceback" not in out, out
    return done.returncode, out


def _user_folder(raw: Path) -> tuple[list[Path], dict[str, str]]:
    """8 good videos in 5 containers/codecs (two rotated) and 4 broken ones, named as pre-cut Kinetics clips."""
    good = [
        write_raw(raw / "g1_000000_000002.mp4", 50, 96, 72, bframes=2),
        write_raw(raw / "g2_000000_000002.mkv", 60, 96, 72, fps=30, bframes=3),
        write_raw(raw / "g3_000000_000002.avi", 50, 96, 72, codec="mpeg4", bframes=2),
        write_raw(raw / "g4_000000_000002.avi", 50, 96, 72, bframes=3),  # h264 in AVI
        write_raw(raw / "g5_000000_000002.mov", 50, 96, 72, rotation=90),
        write_raw(raw / "g6_000000_000002.mp4", 50, 72, 96),
        write_raw(raw / "g7_000000_000002.mp4", 50, 96, 72, bframes=2),
        write_raw(raw / "g8_000000_000002.mp4", 50, 96, 72, rotation=270),
    ]
    (raw / "b1_000000_000002.mp4").write_bytes(b"")
    (raw / "b2_000000_000002.mp4").write_bytes(np.random.default_rng(1).bytes(6000))
    src = write_raw(raw.parent / "src.mp4", 50, 160, 120, bframes=2)
    data = bytearray(src.read_bytes())
    a, b = int(len(data) * 0.55), int(len(data) * 0.62)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (raw / "b3_000000_000002.mp4").write_bytes(bytes(data))  # decodes partway
    cut = write_raw(raw.parent / "cut.mp4", 50, 96, 72, faststart=True)
    (raw / "b4_000000_000002.mp4").write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])  # truncated
    kinds = {"b1": "empty file", "b2": "cannot", "b3": "decode error at frame", "b4": "truncated:"}
    return good, kinds


@pytest.mark.slow
def test_mixed_folder_through_every_tool(tmp_path):
    raw = tmp_path / "my videos"
    raw.mkdir()
    good, kinds = _user_folder(raw)
    bad = {name: next(raw.glob(f"{name}_*")) for name in kinds}

    # 1. check_videos: each broken file listed and printed once, with its reason; no good file
    rc, out = _run(sys.executable, str(REPO / "data_prep/check_videos.py"), str(raw), "--workers", "2",
                   "--timeout", "120", "--no-progress", cwd=tmp_path)
    assert rc == 1
    listed = dict(line.split("\t", 1) for line in (raw / "broken_videos.txt").read_text().splitlines())
    assert set(listed) == {str(p.resolve()) for p in bad.values()}
    for name, path in bad.items():
        assert listed[str(path.resolve())].startswith(kinds[name]), (name, listed)
        assert out.count(path.name) == 1, (name, out)
    assert not any(g.name in out for g in good)

    # 2. prepare_kinetics: the same files broken, for the same reasons; the rest upright h264 clips
    header = "label,youtube_id,time_start,time_end,split\n"
    rows = [f"{'left' if i % 2 else 'right'},g{i},0,2,train" for i in range(1, 7)]
    rows += [f"left,{name},0,2,train" for name in kinds]
    (tmp_path / "train.csv").write_text(header + "\n".join(rows) + "\n")
    (tmp_path / "validate.csv").write_text(header + "left,g7,0,2,val\nright,g8,0,2,val\n")
    (tmp_path / "labels.txt").write_text("left\nright\n")
    data = tmp_path / "data"
    rc, out = _run(str(Path(sys.executable).parent / "gnvideo-prepare-kinetics"), "--csv", str(tmp_path / "train.csv"),
                   str(tmp_path / "validate.csv"), "--videos", str(raw), "--out", str(data), "--short-side", "40",
                   "--workers", "2", "--labels", str(tmp_path / "labels.txt"), "--no-progress", cwd=tmp_path)
    assert rc == 0, out
    report = json.loads((data / "prepare_report.json").read_text())
    assert report["done"] == 8 and not report["missing"]
    assert {Path(b["source"]).resolve(): b["reason"] for b in report["broken"]} == {
        p.resolve(): listed[str(p.resolve())] for p in bad.values()}

    # a disk error later: one prepared train clip and one val clip go bad after preparation
    damaged_train = next((data / "train").rglob("g1_*.mp4"))
    damaged_train.write_bytes(b"")
    damaged_val = next((data / "val").rglob("g7_*.mp4"))
    damaged_val.write_bytes(np.random.default_rng(2).bytes(4000))

    common = ["--config", str(REPO / "configs/synthetic/tiny_r3d_bn.yaml"), "--data.root", str(data),
              "--data.num_workers", "2", "--data.clips_per_device", "2", "--data.train_short_side_range", "[32,36]",
              "--data.train_crop_size", "32", "--data.val_short_side", "32", "--data.val_crop_size", "32",
              "--data.test_short_side", "32", "--data.test_crop_size", "32",
              "--data.test_num_clips", "4", "--data.test_num_crops", "1", "--data.num_frames", "8",
              "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
              "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu", "--run_name", "e2e"]
    gnvideo = [sys.executable, "-m", "gnvideo"]

    # 3. fit: the damaged train clip is named once (with why) whatever worker meets it, training goes on
    rc, out = _run(*gnvideo, "fit", *common, "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1",
                   cwd=tmp_path)
    assert rc == 0, out
    assert len(re.findall(re.escape(damaged_train.name) + r".*empty file \(0 bytes\)", out)) == 1, out
    assert list((tmp_path / "runs" / "e2e").rglob("last.ckpt"))
    assert re.search(r"train: 1 broken videos, \d+ samples drawn again", out), out  # counted across the workers

    # 4. test: the damaged val clip is named once and never scored
    rc, out = _run(*gnvideo, "test", *common, "--ckpt_path", "last", cwd=tmp_path)
    assert rc == 0, out
    assert out.count(damaged_val.name) == 1 and "videos scored 1, skipped 1" in out, out
    assert "test: 1 broken videos, 4 samples not scored" in out, out  # its 4 views

    # 5. predict on the user's raw folder (no dataset needed): good files predicted, each bad one named once, with why
    rc, out = _run(*gnvideo, "predict", *common, "--data.root", str(tmp_path / "nowhere"), "--data.labels",
                   str(tmp_path / "labels.txt"), "--data.predict_files", str(raw), "--ckpt_path", "last",
                   cwd=tmp_path)
    assert rc == 0, out
    for g in good:
        assert re.search(re.escape(g.name) + r": (left|right) ", out), (g.name, out)
    for name, path in bad.items():
        warned = re.findall(r"skipping broken video .*" + re.escape(path.name) + r" \((.*)\)", out)
        assert len(warned) == 1 and warned[0].startswith(kinds[name]), (name, out)
        assert out.count(path.name) == 1, (name, out)
    assert f"predict: {len(bad)} broken videos" in out, out  # counted once more, without names
