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
    assert (out / "bn_vs_gn.png").stat().st_size > 1000

    # A second run reuses the dataset (no regeneration) and starts new run versions.
    assert main([*args, "--clips_per_device", "[1]", "--norms", "[gn]"]) == 0  # the last value of an option wins
    assert "already there" in capsys.readouterr().out
    assert (out / "gn_1clips" / "version_1" / "results.json").is_file()
    assert (out / "gn_1clips" / "version_0" / "results.json").read_text() == json.dumps(gn, indent=2) + "\n"


def test_demo_config_files(tmp_path):
    from gnvideo.demo.runs import _parse

    study = Path(__file__).resolve().parents[2] / "configs" / "study" / "motion_sweep.yaml"
    a = _parse(["--config", str(study)])
    assert a.norms == ["bn", "gn", "bgn"] and a.clips_per_device == [16, 8, 4, 2, 1] and a.seeds == [0, 1, 2]
    assert a.base_lr == 0.1 and a.epochs == 12  # what README's study table was measured with
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
