"""``gnvideo demo`` end to end with a tiny budget: data made, every cell fit and tested, table and plot written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from gnvideo.cli import main


def test_demo_end_to_end_tiny(tmp_path, capsys):
    root, out = tmp_path / "synthetic", tmp_path / "runs"
    args = ["demo", "--root", str(root), "--out", str(out), "--num_classes", "3", "--videos_per_class", "4",
            "--val_videos_per_class", "2", "--epochs", "1", "--clips_per_device", "[2, 1]",
            "--simulated_devices", "2", "--crop_size", "32", "--frames", "4", "--test_clips", "2", "--test_crops", "1",
            "--workers", "0"]
    argv_before = list(sys.argv)
    assert main(args) == 0
    assert sys.argv == argv_before  # the programmatic API never touches the caller's argv
    text = capsys.readouterr().out

    assert (root / "annotations" / "train.csv").is_file()
    results = sorted(out.glob("*/version_*/results*.json"))  # one result file in each fit run's folder
    assert [p.parts[-3] for p in results] == ["bn_1clips", "bn_2clips", "gn_1clips", "gn_2clips"]
    for path in results:
        r = json.loads(path.read_text())
        assert r["videos_scored"] == 6 and r["videos_skipped"] == 0  # 3 classes x 2 held-out videos
        assert 0.0 <= r["top1"] <= 100.0 and r["num_classes"] == 3
        assert r["setting"]["num_frames"] == 4 and r["split"] == "val"
        assert r["checkpoint"] == str(path.parent / "checkpoints" / "last.ckpt")  # the last checkpoint is tested
        assert r["test_views"]["test_num_clips"] == 2 and r["test_views"]["test_num_crops"] == 1
    assert not list(out.glob("*/version_*/checkpoints/best*.ckpt"))  # no validation on the held-out videos
    bn = json.loads((out / "bn_1clips" / "version_0" / "results.json").read_text())
    assert bn["setting"]["norm"] == "sub_bn" and bn["setting"]["norm_options"] == {"clips_per_group": 1}
    assert bn["setting"]["clips_per_device"] == 2  # 1 clip per simulated device x 2 simulated devices
    gn = json.loads((out / "gn_1clips" / "version_0" / "results.json").read_text())
    assert gn["setting"]["norm"] == "gn" and gn["setting"]["clips_per_device"] == 1
    assert gn["setting"]["accumulate_grad_batches"] == 2  # 2 simulated devices: gradients of 2 forwards per step
    assert (out / "gn_1clips" / "version_0" / "config.yaml").is_file()  # the run's config is saved as in the CLI

    table = (out / "table.md").read_text()
    assert "| BN (ours) |" in table and "| GN (ours) |" in table
    assert "4 frames, 2 clips/GPU" in table and "4 frames, 1 clips/GPU" in table
    assert "Chance with 3 classes: top-1 33.3%" in table
    assert table.strip() in text
    assert "From 2 clips to 1 clip per device, top-1: BN " in table and "; GN " in table  # the table in words
    assert "At 1 clip per device: GN is " in table and " BN." in table
    assert "Wall time: dataset " in table and "bn_1clips " in table  # each phase's time
    assert (out / "bn_vs_gn.png").stat().st_size > 1000

    # A second run reuses the dataset (no regeneration) and starts new run versions.
    assert main([*args, "--clips_per_device", "[1]", "--norms", "[gn]"]) == 0  # the last value of an option wins
    assert "already there" in capsys.readouterr().out
    assert (out / "gn_1clips" / "version_1" / "results.json").is_file()
    assert (out / "gn_1clips" / "version_0" / "results.json").read_text() == json.dumps(gn, indent=2) + "\n"


def test_demo_holdout_scores_training_videos_only(tmp_path, capsys, monkeypatch):
    import gnvideo.data.kinetics as kinetics

    opened = []
    for name in ("open_video", "open_sandboxed"):  # in process, or in the decode sandbox (the default)
        real = getattr(kinetics, name)
        monkeypatch.setattr(kinetics, name, lambda path, *a, _real=real, **kw: opened.append(str(path)) or
                            _real(path, *a, **kw))
    root, out = tmp_path / "synthetic", tmp_path / "runs"
    args = ["demo", "--root", str(root), "--out", str(out), "--num_classes", "2", "--videos_per_class", "4",
            "--val_videos_per_class", "1", "--epochs", "1", "--clips_per_device", "[1]", "--norms", "[gn]",
            "--crop_size", "32", "--frames", "4", "--workers", "0", "--holdout_fraction", "0.25",
            "--test_clips", "2", "--test_crops", "1"]
    assert main(args) == 0
    assert opened and all(f"{root}/train/" in path for path in opened)  # workers 0: every open is in this process
    r = json.loads((out / "gn_1clips" / "version_0" / "results.json").read_text())
    assert r["split"] == "holdout" and r["videos_scored"] == 2 and r["videos_skipped"] == 0  # 25 % of 2 x 4
    assert r["annotation"].endswith("train.csv (holdout_fraction 0.25)") and 0 <= r["top1"] <= 100
    assert r["test_views"]["test_num_clips"] == 2 and r["setting"]["norm"] == "gn"  # the test's views
    assert r["setting"]["train_annotation"].endswith("train.csv")
    assert "Scored on the holdout split (25% of the training videos)" in (out / "table.md").read_text()
    assert "on the 25% of the training videos held out" in capsys.readouterr().out


def _result(norm: str, clips: int, seed: int, top1: float) -> dict:
    options = {"clips_per_group": clips} if norm == "sub_bn" else {}
    setting = {"backbone": "tiny_r3d", "norm": norm, "norm_options": options, "num_frames": 8, "seed": seed,
               "clips_per_device": 2 * clips if norm == "sub_bn" else clips}
    return {"top1": top1, "top5": 100.0, "num_classes": 8, "setting": setting, "test_views": {}, "path": "x"}


def test_effect_lines_say_the_table_in_words():
    from gnvideo.demo.runs import effect_lines

    top1 = {("sub_bn", 8): (70.0, 80.0), ("sub_bn", 1): (40.0, 45.0), ("gn", 8): (60.0, 70.0), ("gn", 1): (65.0, 66.0)}
    results = [_result(norm, clips, seed, v[seed]) for (norm, clips), v in top1.items() for seed in (0, 1)]
    assert effect_lines(results) == [
        "From 8 clips to 1 clip per device, top-1: BN loses 32.5 points (seeds 0, 1: 30.0, 35.0); "
        "GN gains 0.5 points (seeds 0, 1: 5.0, -4.0).",
        "At 1 clip per device: GN is 23.0 points above BN (seeds 0, 1: 25.0, 21.0).",
    ]
    one_seed = [r for r in results if r["setting"]["seed"] == 0 and r["setting"]["norm"] == "gn"]
    assert effect_lines(one_seed) == ["From 8 clips to 1 clip per device, top-1: GN gains 5.0 points."]


def test_training_threads_leave_the_workers_their_cores(monkeypatch):
    import os

    from gnvideo.demo.runs import parse_args, training_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert training_threads(parse_args(["--workers", "2"])) == 1  # 2 cores, 2 decoding workers: one thread
    assert training_threads(parse_args(["--workers", "0"])) == 2
    assert training_threads(parse_args(["--threads", "3"])) == 3
    with pytest.raises(ValueError, match="threads: must be >= 1"):
        training_threads(parse_args(["--threads", "0"]))


def test_demo_config_files(tmp_path):
    from gnvideo.demo.runs import parse_args as _parse

    study = Path(__file__).resolve().parents[2] / "configs" / "study" / "motion_sweep.yaml"
    a = _parse(["--config", str(study)])
    assert a.norms == ["bn", "gn", "bgn"] and a.clips_per_device == [16, 8, 4, 2, 1] and a.seeds == [0, 1, 2]
    demo = _parse([])  # the demo is one cell of the study: every other option is the demo's
    swept = {"config", "out", "norms", "clips_per_device", "seeds"}
    assert {k: v for k, v in vars(a).items() if k not in swept} == {k: v for k, v in vars(demo).items()
                                                                    if k not in swept}
    assert set(demo.norms) <= set(a.norms) and set(demo.clips_per_device) <= set(a.clips_per_device)
    assert not a.out.startswith("configs")  # outputs live outside configs/
    assert _parse(["--config", str(study), "--seeds", "[5]"]).seeds == [5]  # the command line wins
    bad = tmp_path / "bad.yaml"
    bad.write_text("norms: [gn]\nclip_per_device: [4]\n")
    with pytest.raises(SystemExit):
        _parse(["--config", str(bad)])
    with pytest.raises(SystemExit):
        _parse(["--norms", "[bn, xn]"])  # only the registry's demo kinds


def test_demo_and_runner_do_not_import_the_command_line():
    import subprocess

    code = "import sys, gnvideo.demo, gnvideo.training.runner; print('gnvideo.cli' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"  # gnvideo.cli dispatches to the demo; the demo builds runs with training.runner
