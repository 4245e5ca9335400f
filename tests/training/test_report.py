"""Report on fabricated results.json files: markdown values, paper rows, chance line, PNG written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gnvideo.cli import main
from gnvideo.report import load_results, markdown_table, render


def _write(folder: Path, norm: str, frames: int, clips: int, seed: int, top1: float, top5: float, **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    setting = {"backbone": "i3d_r50", "norm": norm, "num_frames": frames, "sampling_rate": 64 // frames,
               "clips_per_device": clips, "devices": 8, "num_nodes": 1, "accumulate_grad_batches": 1, "seed": seed,
               **extra}
    (folder / "results.json").write_text(json.dumps({
        "top1": top1, "top5": top5, "mean_class_accuracy": top1 - 1, "videos_scored": 100, "videos_skipped": 0,
        "num_classes": 400, "setting": setting}))


@pytest.fixture
def runs(tmp_path) -> Path:
    _write(tmp_path / "bn8" / "s0" / "checkpoints", "bn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "bn8" / "s1" / "checkpoints", "bn", 32, 8, 1, 72.0, 91.0)
    _write(tmp_path / "gn8" / "version_0", "gn", 32, 8, 0, 71.25, 89.5)
    _write(tmp_path / "gn4" / "deep" / "er", "gn", 32, 4, 0, 71.0, 89.0)
    _write(tmp_path / "bgn64", "bgn", 64, 4, 0, 60.0, 80.0)
    _write(tmp_path / "sub", "sub_bn", 32, 16, 0, 69.0, 88.0, norm_options={"clips_per_group": 4},
           accumulate_grad_batches=4)
    return tmp_path


def _cells(table: str) -> dict[str, list[str]]:
    rows = [line for line in table.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    out = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = dict(zip(header[1:], cells[1:]))
    return out


def test_markdown_table_values(runs):
    results = load_results([runs])
    assert len(results) == 6
    cells = _cells(markdown_table(results))
    assert list(cells) == ["BN (ours)", "GN (ours)", "BGN (ours)"]  # sub_bn runs are per-GPU BN: BN row
    assert cells["BN (ours)"]["32 frames, 8 clips/GPU"] == "71.0 ± 1.4 / 90.5 ± 0.7 (n=2)"  # mean ± sample std
    assert cells["GN (ours)"]["32 frames, 8 clips/GPU"] == "71.2 / 89.5"
    assert cells["GN (ours)"]["32 frames, 4 clips/GPU"] == "71.0 / 89.0"
    assert cells["BN (ours)"]["32 frames, 4 clips/GPU"] == "69.0 / 88.0"  # sub_bn: BN batch = clips_per_group
    assert "32 frames, 16 clips/GPU" not in cells["BN (ours)"]  # its 16 clips per device are not its BN batch
    assert cells["BGN (ours)"]["64 frames, 4 clips/GPU"] == "60.0 / 80.0"


def test_paper_rows_and_chance(runs):
    table = markdown_table(load_results([runs]), paper=True, chance=True)
    cells = _cells(table)
    assert cells["GN (paper)"]["64 frames, 4 clips/GPU"] == "74.5 / —"
    assert cells["BN (paper)"]["32 frames, 8 clips/GPU"] == "73.3 / —"
    assert cells["BN (ours)"]["64 frames, 4 clips/GPU"] == "—"
    assert "Chance with 400 classes: top-1 0.2%, top-5 1.2%." in table


def test_cli_report_writes_png(runs, tmp_path, capsys):
    out = tmp_path / "plots" / "table8.png"
    assert main(["report", str(runs / "bn8"), str(runs / "gn8"), "--paper", "--plot", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| BN (ours) |" in text and "| GN (paper) |" in text
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_render_for_demo_and_errors(tmp_path):
    results = [{"top1": 50.0, "top5": None, "setting": {"norm": "gn", "num_frames": 8, "clips_per_device": 2}}]
    assert "50.0 / —" in render(results, plot_path=tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        load_results([tmp_path])
    with pytest.raises(ValueError):
        render([])


def test_report_refuses_to_merge_two_backbones(tmp_path, capsys):
    _write(tmp_path / "a", "gn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "b", "gn", 32, 8, 1, 72.0, 91.0, backbone="r3d_18")
    from gnvideo.report import MixedSettingsError

    with pytest.raises(MixedSettingsError, match=r"GN cell at 32 frames, 8 clips/GPU .* differ in backbone"):
        markdown_table(load_results([tmp_path]))
    assert main(["report", str(tmp_path)]) == 2  # the command: one line naming the field, no traceback
    err = capsys.readouterr().err
    assert "differ in backbone" in err and "'r3d_18'" in err and "Traceback" not in err


def test_report_names_every_differing_field(tmp_path):
    _write(tmp_path / "a", "bn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "b", "bn", 32, 8, 1, 72.0, 91.0, devices=4, accumulate_grad_batches=2, num_classes=8)
    from gnvideo.report import MixedSettingsError

    with pytest.raises(MixedSettingsError, match=r"differ in accumulate_grad_batches, devices, num_classes"):
        markdown_table(load_results([tmp_path]))


def test_result_files_are_never_overwritten(tmp_path):
    from gnvideo.results import RunSetting, TestResult, write_result

    result = TestResult(top1=float("nan"), top5=1.0, mean_class_accuracy=1.0, videos_scored=0, videos_skipped=2,
                        num_classes=3, checkpoint=None, annotation="a.csv", split="val", test_views={},
                        setting=RunSetting(backbone="tiny_r3d").__dict__)
    paths = [write_result(result, tmp_path) for _ in range(3)]
    assert [p.name for p in paths] == ["results.json", "results-1.json", "results-2.json"]
    assert json.loads(paths[0].read_text())["top1"] is None  # NaN is written as null


def test_read_metrics_later_row_of_a_step_wins(tmp_path):
    from gnvideo.training.run_logs import read_metrics

    (tmp_path / "metrics.csv").write_text("epoch,step,train/loss,val/top1\n0,0,2.5,\n0,1,2.25,\n0,1,,0.5\n"
                                          "0,2,2.0,\n0,1,2.125,\n")  # a resumed attempt re-logged step 1
    assert read_metrics(tmp_path, "train/loss") == {0: 2.5, 1: 2.125, 2: 2.0}
    assert read_metrics(tmp_path, "val/top1") == {1: 0.5}


def test_nonlocal_runs_get_rows_of_their_own(tmp_path, capsys):
    """Same norm and cell, with and without non-local blocks: separate rows, never a mixed-settings error; a setting
    stored without the non-local fields takes them from its backbone preset."""
    nl5 = {"backbone": "i3d_r50_nl5", "nonlocal_blocks": 5, "nonlocal_instantiation": "embedded_gaussian"}
    _write(tmp_path / "bn", "bn", 32, 8, 0, 73.0, 90.0)
    _write(tmp_path / "bn_nl5" / "s0", "bn", 32, 8, 0, 74.0, 91.0, **nl5)
    _write(tmp_path / "bn_nl5" / "s1", "bn", 32, 8, 1, 75.0, 92.0, backbone="i3d_r50_nl5")  # no nonlocal_* fields
    _write(tmp_path / "bn_nl5_dot", "bn", 32, 8, 0, 74.5, 91.5, backbone="i3d_r50_nl5_dot", nonlocal_blocks=5,
           nonlocal_instantiation="dot_product")
    _write(tmp_path / "gn_nl5", "gn", 32, 8, 0, 73.5, 90.5, **nl5)
    _write(tmp_path / "gn", "gn", 32, 8, 0, 72.0, 89.0)
    table = markdown_table(load_results([tmp_path]), paper=True)
    cells = _cells(table)
    assert list(cells) == ["BN (ours)", "BN + NL5 (ours)", "BN + NL5 dot (ours)", "GN (ours)", "GN + NL5 (ours)",
                           "BN (paper)", "GN (paper)", "BN + NL5 (Non-local code)"]
    col = "32 frames, 8 clips/GPU"
    assert cells["BN (ours)"][col] == "73.0 / 90.0"
    assert cells["BN + NL5 (ours)"][col] == "74.5 ± 0.7 / 91.5 ± 0.7 (n=2)"
    assert cells["BN + NL5 dot (ours)"][col] == "74.5 / 91.5" and cells["GN + NL5 (ours)"][col] == "73.5 / 90.5"
    assert cells["BN + NL5 (Non-local code)"][col] == "74.9 / 91.6"
    assert "Non-local code" not in markdown_table(load_results([tmp_path / "bn"]), paper=True)
    assert main(["report", str(tmp_path), "--plot", str(tmp_path / "p.png")]) == 0
    assert "| GN + NL5 (ours) |" in capsys.readouterr().out


def test_the_setting_records_the_nonlocal_blocks():
    from types import SimpleNamespace

    from gnvideo.models import build_model
    from gnvideo.results import setting_from_run

    trainer = SimpleNamespace(num_devices=1, num_nodes=1, accumulate_grad_batches=1, datamodule=None)
    for backbone, count, kind in (("tiny_r3d_nl", 2, "embedded_gaussian"), ("tiny_r3d", 0, None)):
        module = SimpleNamespace(hparams={"backbone": backbone, "norm": "bn"}, model=build_model(backbone))
        s = setting_from_run(trainer, module)
        assert (s.nonlocal_blocks, s.nonlocal_instantiation) == (count, kind)
