"""gnvideo.models.checkpoint_io: files are read without running code; every bad file is one line naming the setting."""

from __future__ import annotations

import argparse
import pickle
import zipfile

import pytest
import torch

from gnvideo.errors import ConfigError
from gnvideo.models.checkpoint_io import (
    CheckpointError,
    WeightsError,
    check_checkpoint,
    convert_to_safetensors,
    file_format,
    read_checkpoint,
    unwrap_state_dict,
)
from gnvideo.models.convert_weights import main as convert_main


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(code_running_checkpoint, legacy):
    path = code_running_checkpoint(legacy=legacy)
    torch.load(path, weights_only=False)  # the fixture is real: a full unpickle creates the marker
    assert code_running_checkpoint.marker.is_file()
    code_running_checkpoint.marker.unlink()
    for read in (read_checkpoint, check_checkpoint):
        with pytest.raises(CheckpointError) as info:
            read(path, "init_from")
        message = str(info.value)
        assert message.startswith(f"init_from: {path} is refused: its pickle names io.open"), message
        assert f"gnvideo convert-weights {path} {path.with_suffix('.safetensors')}" in message
        assert "\n" not in message and info.value.key == "init_from"
    assert not code_running_checkpoint.marker.exists()


def _truncated(tmp_path):
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:3000])
    return path


@pytest.mark.parametrize("make, expected", [
    (_truncated, r"cut.ckpt is truncated or damaged: it starts as a zip archive \(torch.save\) but its directory"),
    (lambda d: d / "archive.zip", r"archive.zip is a zip archive without data.pkl, not a PyTorch checkpoint$"),
    (lambda d: d / "program.pt", r"program.pt is a TorchScript program \(torch.jit.save\), not a checkpoint"),
    (lambda d: d / "empty.pth", r"empty.pth is empty \(0 bytes\), not a checkpoint$"),
    (lambda d: d / "notes.ckpt", r"notes.ckpt is neither a PyTorch checkpoint \(torch.save\) nor a safetensors file$"),
    (lambda d: d / "raw.pkl", r"raw.pkl is a plain Python pickle \(not written by torch.save\), which gnvideo never"),
    (lambda d: d / "numpy.pth", r"numpy.pth is refused: its pickle names numpy\..*_reconstruct"),
    (lambda d: d / "namespace.ckpt", r"namespace.ckpt is refused: its pickle names argparse.Namespace"),
    (lambda d: d, r"is a folder, not a checkpoint file$"),
    (lambda d: d / "missing.ckpt", r"file .*missing.ckpt does not exist$"),
], ids=["truncated", "zip", "torchscript", "empty", "text", "plain-pickle", "numpy", "namespace", "folder", "missing"])
def test_bad_files_are_one_line_naming_key_and_file(tmp_path, make, expected):
    import numpy as np

    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "notes.ckpt").write_text("these are not weights\n")
    (tmp_path / "raw.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as z:
        z.writestr("notes.txt", "hello")
    with zipfile.ZipFile(tmp_path / "program.pt", "w") as z:  # the layout of torch.jit.save (deprecated to call)
        for name in ("program/data.pkl", "program/constants.pkl", "program/code/__torch__.py"):
            z.writestr(name, b"")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "score": np.zeros(3)}, tmp_path / "numpy.pth")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hparams": argparse.Namespace(lr=0.1)},
               tmp_path / "namespace.ckpt")
    path = make(tmp_path)
    for read in (read_checkpoint, check_checkpoint):
        with pytest.raises(CheckpointError, match=r"^pretrained_2d_file: .*" + expected) as info:
            read(path, "pretrained_2d_file")
        assert "\n" not in str(info.value)
        assert isinstance(info.value, WeightsError) and isinstance(info.value, ConfigError)


def test_plain_checkpoints_and_safetensors_are_read(tmp_path):
    from safetensors.torch import save_file

    sd = {"conv1.weight": torch.randn(4, 3, 1, 1), "fc.bias": torch.randn(2)}
    torch.save({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "hp": {"lr": (0.1, None)}},
               tmp_path / "a.ckpt")
    torch.save(sd, tmp_path / "b.pth", _use_new_zipfile_serialization=False)
    save_file(sd, tmp_path / "c.safetensors")
    (tmp_path / "d.bin").write_bytes((tmp_path / "c.safetensors").read_bytes())  # the format is in the bytes
    assert [file_format(tmp_path / n) for n in ("a.ckpt", "b.pth", "c.safetensors", "d.bin")] == [
        "torch", "torch_legacy", "safetensors", "safetensors"]
    for name in ("a.ckpt", "b.pth", "c.safetensors", "d.bin"):
        check_checkpoint(tmp_path / name, "init_from")
        got = unwrap_state_dict(read_checkpoint(tmp_path / name, "init_from"))
        assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd), name
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes((tmp_path / "c.safetensors").read_bytes()[:-5])
    for read in (read_checkpoint, check_checkpoint):
        with pytest.raises(CheckpointError, match=r"^init_from: .*cut.safetensors is a truncated or damaged "
                                                  r"safetensors file"):
            read(cut, "init_from")


def test_unwrap_names_the_key():
    with pytest.raises(CheckpointError, match=r"^init_from: the checkpoint holds no tensors"):
        unwrap_state_dict({"epoch": 3}, "init_from")
    with pytest.raises(CheckpointError, match=r"^ckpt_path: expected a state dict .* got list"):
        unwrap_state_dict([torch.zeros(1)], "ckpt_path")
    sd = unwrap_state_dict({"state_dict": {"model.a": torch.zeros(1), "train_top1.tp": torch.zeros(1)}})
    assert list(sd) == ["a"]


def test_convert_weights_turns_a_trusted_file_into_safetensors(tmp_path, capsys):
    src = tmp_path / "other_code.ckpt"
    weight = torch.randn(8, 3)
    torch.save({"state_dict": {"model.fc.weight": weight, "model.fc.bias": torch.zeros(8)},
                "hyper_parameters": argparse.Namespace(lr=0.1)}, src)
    with pytest.raises(CheckpointError, match="refused"):
        read_checkpoint(src, "init_from")
    out = tmp_path / "other_code.safetensors"
    assert convert_main([str(src), str(out)]) == 0
    assert "wrote 2 tensors" in capsys.readouterr().out
    assert file_format(out) == "safetensors"
    got = read_checkpoint(out, "init_from")
    assert set(got) == {"fc.weight", "fc.bias"} and torch.equal(got["fc.weight"], weight)
    assert convert_main([str(src), str(out)]) == 2  # never overwrites
    assert "target: " in capsys.readouterr().err
    with pytest.raises(CheckpointError, match=r"^target: .*must end in .safetensors"):
        convert_to_safetensors(src, tmp_path / "x.pth")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"^source: .*notes.txt is neither a PyTorch checkpoint"):
        convert_to_safetensors(tmp_path / "notes.txt", tmp_path / "n.safetensors")
