"""Report on fabricated results.json files: markdown values, paper rows, chance line, PNG written."""

from __future__ import annotations

from pathlib import Path

import pytest

from gnvideo.cli import main
from gnvideo.report import load_results, markdown_table, render
from gnvideo.results import RunSetting, TestResult, read_result, write_result


def _write(folder: Path, norm: str, frames: int, clips: int, seed: int, top1: float, top5: float, **extra) -> Path:
    setting = RunSetting(**{"backbone": "i3d_r50", "dataset": "kinetics400", "num_classes": 400, "norm": norm,
                            "num_frames": frames, "sampling_rate": 64 // frames, "clips_per_device": clips,
                            "devices": 8, "seed": seed, **extra})
    result = TestResult(top1=top1, top5=top5, mean_class_accuracy=top1 - 1, videos_scored=100, videos_skipped=0,
                        setting=setting, test_num_clips=10, test_num_crops=3)
    return write_result(result, folder)


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
    results = [{"top1": 50.0, "top5": None, "mean_class_accuracy": 50.0, "videos_scored": 2, "videos_skipped": 0,
                "setting": {"backbone": "tiny_r3d", "norm": "gn", "num_frames": 8, "clips_per_device": 2}}]
    assert "50.0 / —" in render(results, plot_path=tmp_path / "p.png")
    assert (tmp_path / "p.png").is_file()
    with pytest.raises(FileNotFoundError, match="no results.json"):
        load_results([tmp_path])
    with pytest.raises(ValueError):
        render([])
    (tmp_path / "results.json").write_text('{"top1": 1.0, "setting": {"backbone": "x"}, "colour": 1}')
    with pytest.raises(ValueError, match=r"results.json: not a gnvideo result.*colour"):
        load_results([tmp_path])


def test_result_files_never_overwrite_and_round_trip(tmp_path):
    a = _write(tmp_path, "sub_bn", 32, 16, 0, 69.0, 88.0, norm_options={"clips_per_group": 4})
    b = _write(tmp_path, "sub_bn", 32, 16, 1, 70.0, 88.0, norm_options={"clips_per_group": 4})
    assert (a.name, b.name) == ("results.json", "results_1.json")
    r = read_result(a)
    assert r.top1 == 69.0 and r.setting.norm_options == {"clips_per_group": 4} and r.path == str(a)
    assert (r.setting.norm_row, r.setting.clips_per_norm) == ("bn", 4)  # sub_bn at 4 clips per group = BN at 4
    assert r.setting.input_mean is None and read_result(b).setting.seed == 1


def test_report_refuses_to_merge_two_backbones(tmp_path, capsys):
    _write(tmp_path / "a", "gn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "b", "gn", 32, 8, 1, 72.0, 91.0, backbone="r3d_18")
    with pytest.raises(ValueError, match="differ in backbone = i3d_r50, r3d_18"):
        markdown_table(load_results([tmp_path]))
    assert main(["report", str(tmp_path)]) == 2
    assert "backbone = i3d_r50, r3d_18" in capsys.readouterr().err


@pytest.mark.parametrize(("field", "value", "shown"), [
    ("sampling_rate", 4, "sampling_rate = 2, 4"),
    ("accumulate_grad_batches", 2, "accumulate_grad_batches = 1, 2"),
    ("norm_options", {"num_groups": 16}, 'norm_options = {"num_groups": 16}, {}'),
])
def test_report_names_fields_that_differ_inside_a_cell(tmp_path, field, value, shown):
    _write(tmp_path / "a", "gn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "b", "gn", 32, 8, 1, 72.0, 91.0, **{field: value})
    with pytest.raises(ValueError, match="differ in more than the seed") as err:
        markdown_table(load_results([tmp_path]))
    assert shown in str(err.value)


def test_report_refuses_the_same_seed_twice(tmp_path):
    _write(tmp_path / "a", "gn", 32, 8, 0, 70.0, 90.0)
    _write(tmp_path / "a", "gn", 32, 8, 0, 70.5, 90.0)  # one run tested twice: two files, never merged
    with pytest.raises(ValueError, match=r"repeat seed\(s\) \[0\]"):
        markdown_table(load_results([tmp_path]))
