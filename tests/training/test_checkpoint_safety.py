"""From the CLI: no checkpoint option runs code from its file, and each bad file is one line before any run folder.

Options that take a checkpoint: ``--ckpt_path`` (fit, validate, test, predict; predict also reads its class names
from it), ``--model.init_from``, ``--model.pretrained_2d`` (a path) and ``--model.pretrained_2d_file``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from gnvideo.cli import main

from .conftest import REPO, cli_args


def _fails_with_one_line(capsys, argv, runs, expected: str) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and expected in lines[0], err
    assert not runs.exists(), "a run folder was made before the error"
    return lines[0]


@pytest.mark.parametrize("subcommand", ["fit", "validate", "test", "predict"])
def test_ckpt_path_that_would_run_code_is_refused(subcommand, synthetic_root, tmp_path, code_running_checkpoint,
                                                  capsys):
    evil = code_running_checkpoint()
    runs = tmp_path / "runs"
    extra = ["--data.predict_files", str(synthetic_root / "val")] if subcommand == "predict" else []
    line = _fails_with_one_line(capsys, [subcommand, *cli_args(synthetic_root, runs, *extra), "--ckpt_path", str(evil)],
                                runs, f"gnvideo {subcommand}: error: ckpt_path: {evil} is refused")
    assert "gnvideo convert-weights" in line
    assert not code_running_checkpoint.marker.exists()


@pytest.mark.parametrize("option", ["--model.init_from", "--model.pretrained_2d", "--model.pretrained_2d_file"])
def test_weights_options_that_would_run_code_are_refused(option, synthetic_root, tmp_path, code_running_checkpoint,
                                                         capsys):
    evil = code_running_checkpoint()
    runs = tmp_path / "runs"
    extra = ["--model.pretrained_2d", "torchvision_resnet50"] if option.endswith("_file") else []
    _fails_with_one_line(capsys, ["fit", *cli_args(synthetic_root, runs, *extra), option, str(evil)], runs,
                         f"gnvideo fit: error: {option[2:]}: {evil} is refused: its pickle names io.open")
    assert not code_running_checkpoint.marker.exists()


def _files(tmp_path):
    cut = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(4000)}, "pytorch-lightning_version": "2.6.6"}, cut)
    cut.write_bytes(cut.read_bytes()[:4000])
    (tmp_path / "notes.ckpt").write_text("not a checkpoint\n")
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 7, 7)}, tmp_path / "weights.pth")  # a state dict, no run
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.6",  # Lightning would build the class it names
                "hyper_parameters": {"_class_path": "subprocess.Popen", "args": "touch x"}}, tmp_path / "other.ckpt")
    return {"truncated": (cut, "is truncated or damaged"),
            "other module": (tmp_path / "other.ckpt", "is not the checkpoint of a gnvideo run: its hyper_parameters "
                             "hold _class_path, args, which VideoClassifier does not take"),
            "text": (tmp_path / "notes.ckpt", "is neither a PyTorch checkpoint (torch.save) nor a safetensors file"),
            "state dict": (tmp_path / "weights.pth", "is not the checkpoint of a run (no Lightning 'state_dict'): "
                           "to start from its weights, give it as --model.init_from")}


@pytest.mark.parametrize("kind", ["truncated", "text", "state dict", "other module"])
def test_ckpt_path_bad_files_are_one_line(kind, synthetic_root, tmp_path, capsys):
    path, expected = _files(tmp_path)[kind]
    runs = tmp_path / "runs"
    _fails_with_one_line(capsys, ["test", *cli_args(synthetic_root, runs), "--ckpt_path", str(path)], runs,
                         f"gnvideo test: error: ckpt_path: {path} {expected}")


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_init_from_bad_files_are_one_line(kind, synthetic_root, tmp_path, capsys):
    path, expected = _files(tmp_path)[kind]
    runs = tmp_path / "runs"
    _fails_with_one_line(capsys, ["fit", *cli_args(synthetic_root, runs), "--model.init_from", str(path)], runs,
                         f"gnvideo fit: error: model.init_from: {path} {expected}")


def test_a_damaged_last_checkpoint_and_weights_only_false_are_one_line(synthetic_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    last = runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 cut short by a full disk")
    with pytest.raises(SystemExit) as e:
        main(["fit", *cli_args(synthetic_root, runs), "--ckpt_path", "last"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert f"gnvideo fit: error: ckpt_path: {last} is truncated or damaged" in err
    assert sorted(p.name for p in (runs / "tiny_r3d_bn").iterdir()) == ["version_0"]
    with pytest.raises(SystemExit):
        main(["test", *cli_args(synthetic_root, tmp_path / "other"), "--weights_only", "false"])
    assert "gnvideo test: error: weights_only: gnvideo reads checkpoints as tensors and plain types only" in \
        capsys.readouterr().err


def test_predict_class_names_are_read_safely(code_running_checkpoint):
    from gnvideo.data.datamodule import labels_from_checkpoint
    from gnvideo.models.checkpoint_io import CheckpointError

    with pytest.raises(CheckpointError, match=r"^ckpt_path: .*evil.ckpt is refused"):
        labels_from_checkpoint(str(code_running_checkpoint()))
    assert not code_running_checkpoint.marker.exists()


@pytest.mark.slow
def test_the_gnvideo_command_exits_non_zero_and_runs_nothing(synthetic_root, tmp_path, code_running_checkpoint):
    """As a user types it: a separate process, its exit status and its stderr."""
    evil = code_running_checkpoint("model.pyth")
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "gnvideo", "fit", *cli_args(synthetic_root, runs),
                           "--model.init_from", str(evil)], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 2, done.stderr
    assert f"gnvideo fit: error: model.init_from: {evil} is refused" in done.stderr
    assert "Traceback" not in done.stderr and not runs.exists()
    assert not code_running_checkpoint.marker.exists()
