"""Bad data settings end in one line, ``gnvideo <cmd>: error: KEY: ...``, before any run folder exists (issue 10,
findings 5, 6 and 8)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from gnvideo.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from gnvideo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_dataset(root, num_classes=3, videos_per_class=2, val_videos_per_class=1, seed=0, workers=0,
                           short_side_range=(40, 44), fps_range=(12, 12), duration_range=(1.5, 1.5))
    return root


def _args(root: Path, runs: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/synthetic/tiny_r3d_bn.yaml"), "--data.root", str(root),
            "--data.num_workers", "0", "--data.clips_per_device", "2", "--data.train_short_side_range", "[32,36]",
            "--data.train_crop_size", "32", "--data.val_short_side", "32", "--data.val_crop_size", "32",
            "--data.test_short_side", "32", "--data.test_crop_size", "32",
            "--data.test_num_clips", "1", "--data.test_num_crops", "1", "--trainer.default_root_dir", str(runs),
            "--trainer.enable_progress_bar", "false", "--trainer.accelerator", "cpu", "--trainer.max_steps", "1",
            *extra]


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("case,extra,expected", [
    ("malformed", ["--data.train_annotation", "{bad}"], r"data\.train_annotation: .*bad\.csv:2: malformed row"),
    ("times", ["--data.train_annotation", "{times}"], r"data\.train_annotation: .*times\.csv:2: malformed row, "
                                                      r"time_start must be a whole number"),
    ("no_annotation", ["--data.train_annotation", "{tmp}/nope.csv"], r"data\.train_annotation: annotation file "
                                                                     r"not found: .*nope\.csv"),
    ("no_exclude", ["--data.exclude_list", "{tmp}/nope.txt"], r"data\.exclude_list: file not found: .*nope\.txt"),
    ("no_ckpt", ["--ckpt_path", "{tmp}/nope.ckpt"], r"ckpt_path: file .*nope\.ckpt does not exist"),
    ("sub_bn", ["--model.norm", "sub_bn", "--model.norm_options", "{clips_per_group: 3}"],
     r"model\.norm_options\.clips_per_group: 3 does not divide data\.clips_per_device 2"),
    ("tiny", ["--data.clips_per_device", "8"], r"data\.clips_per_device: the train split has 6 usable videos "
                                               r"\(6 listed in .*\), fewer than one batch of 8 clips: 0 batches"),
    ("decode_timeout", ["--data.decode_timeout", "0"], r"data\.decode_timeout: must be a positive number of "
                                                       r"seconds, got 0"),
])
def test_fit_errors_are_one_line_and_leave_no_run_folder(tiny_root, tmp_path, capsys, case, extra, expected):
    (tmp_path / "bad.csv").write_text("label,youtube_id,time_start,time_end,split\n\"moving left\",x,1,2\n")
    (tmp_path / "times.csv").write_text("label,youtube_id,time_start,time_end,split\n\"moving left\",x,0.5,2,train\n")
    names = {"{bad}": str(tmp_path / "bad.csv"), "{times}": str(tmp_path / "times.csv"), "{tmp}": str(tmp_path)}
    for key, value in names.items():
        extra = [e.replace(key, value) for e in extra]
    line = _error(capsys, ["fit", *_args(tiny_root, tmp_path / "runs", *extra)])
    assert line.startswith("gnvideo fit: error: ")
    assert re.search(expected, line), line
    assert not (tmp_path / "runs").exists()  # nothing to clean up


def test_decoding_without_the_sandbox_is_said_at_the_start(tiny_root, tmp_path, caplog):
    assert main(["fit", *_args(tiny_root, tmp_path / "runs", "--data.decode_sandbox", "false",
                               "--trainer.limit_val_batches", "1")]) == 0
    said = [r.getMessage() for r in caplog.records if "decode_sandbox" in r.getMessage()]
    assert said == ["data.decode_sandbox is off: videos are decoded in the main process, where a decoder crash ends "
                    "the run and a hang stops it"]


def test_test_without_checkpoint_file(tiny_root, tmp_path, capsys):
    line = _error(capsys, ["test", *_args(tiny_root, tmp_path / "runs", "--ckpt_path", str(tmp_path / "x.ckpt"))])
    assert line == f"gnvideo test: error: ckpt_path: file {tmp_path / 'x.ckpt'} does not exist"


def test_predict_needs_no_dataset_root_and_takes_a_list_file(tiny_root, tmp_path, capsys):
    videos = tmp_path / "my videos"
    videos.mkdir()
    src = sorted((tiny_root / "val").rglob("*.mp4"))
    shutil.copy(src[0], videos / "a,b c.mp4")  # a comma: the [..] list syntax cannot carry it
    shutil.copy(src[1], videos / "plain.mp4")
    (videos / "list.txt").write_text("# one per line, relative to this file\na,b c.mp4\nplain.mp4\n")
    common = _args(tmp_path / "no such root", tmp_path / "runs", "--data.labels", str(tiny_root / "labels.txt"))
    for given in (videos / "list.txt", videos, videos / "a,b c.mp4"):
        assert main(["predict", *common, "--data.predict_files", str(given)]) == 0
        out = capsys.readouterr().out
        assert "a,b c.mp4: moving" in out
    line = _error(capsys, ["predict", *common, "--data.predict_files", f"[{videos / 'a,b c.mp4'}]"])
    assert "does not exist (a comma in a file name splits the [..] list" in line


def test_predict_without_dataset_takes_the_checkpoints_class_names(tiny_root, tmp_path, capsys):
    root = tmp_path / "ds"
    shutil.copytree(tiny_root, root)
    runs = tmp_path / "runs"
    assert main(["fit", *_args(root, runs, "--trainer.limit_val_batches", "1", "--run_name", "r")]) == 0
    ckpt = str(next(runs.rglob("last.ckpt")))
    capsys.readouterr()
    common = _args(tmp_path / "gone", runs, "--run_name", "r", "--data.predict_files", str(root / "val"),
                   "--ckpt_path", ckpt)
    assert main(["predict", *common]) == 0
    assert re.search(r"\.mp4: (moving|rotating|growing|shrinking)", capsys.readouterr().out)
    (root / "labels.txt").unlink()
    line = _error(capsys, ["predict", *common])
    assert line == ("gnvideo predict: error: data.labels: the checkpoint has 3 classes and its labels file is gone; "
                    "give the class-name file (one name per line)")
