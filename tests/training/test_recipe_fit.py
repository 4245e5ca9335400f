"""From the CLI: a 400-class checkpoint fine-tunes onto an 8-class dataset; precise BN; train_clips -> max_steps."""

from __future__ import annotations

import pytest
import torch

from gnvideo.cli import main

from .conftest import cli_args


@pytest.fixture(scope="module")
def eight_class_root(tmp_path_factory):
    from gnvideo.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic8")
    make_synthetic_dataset(root, num_classes=8, videos_per_class=1, val_videos_per_class=1, seed=1, workers=0,
                           short_side_range=(40, 40), fps_range=(12, 12), duration_range=(1.5, 1.5))
    return root


def test_400_class_checkpoint_fine_tunes_onto_8_classes(eight_class_root, tmp_path, capsys):
    from gnvideo.training.module import VideoClassifier

    src = VideoClassifier(backbone="tiny_r3d", num_classes=400, norm="bn")
    ckpt = tmp_path / "k400.ckpt"
    torch.save({"state_dict": src.state_dict(), "hyper_parameters": dict(src.hparams)}, ckpt)
    runs = tmp_path / "runs"
    assert main(["fit", *cli_args(eight_class_root, runs), "--model.init_from", str(ckpt),
                 "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "skipped fc.weight: class count differs: checkpoint (400, 128), model (8, 128)" in out
    assert "initialized fc.bias" in out
    tuned = torch.load(next((runs / "tiny_r3d_bn" / "version_0" / "checkpoints").glob("last*.ckpt")),
                       weights_only=False)["state_dict"]
    assert tuned["model.fc.weight"].shape == (8, 128)


def test_init_from_errors_are_one_line(eight_class_root, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    with pytest.raises(SystemExit) as e:
        main(["fit", *cli_args(eight_class_root, tmp_path / "runs"), "--model.init_from", str(bad)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model.init_from" in err and "Traceback" not in err


def test_precise_bn_before_validation(eight_class_root, tmp_path, capsys):
    assert main(["fit", *cli_args(eight_class_root, tmp_path / "runs"), "--precise_bn.num_batches", "2",
                 "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1"]) == 0
    out = capsys.readouterr().out
    assert "precise BN: statistics of" in out and "from 2 training batches" in out
    assert out.count("precise BN:") == 1  # end of the last epoch and the validation after it share one pass


def test_train_clips_sets_max_steps(eight_class_root, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["fit", *cli_args(eight_class_root, runs), "--model.train_clips", "12",
                 "--trainer.limit_val_batches", "0"]) == 0  # 12 clips / 4 per step = 3 steps
    assert "12 clips / 4 per step = 3 optimizer steps" in capsys.readouterr().out
    last = torch.load(runs / "tiny_r3d_bn" / "version_0" / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3


def test_missing_imagenet_weights_stop_the_run_with_one_line(eight_class_root, tmp_path, capsys, monkeypatch):
    """No network and no local file: one line naming the source, no traceback; a restored checkpoint needs neither."""
    import urllib.error

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        main(["fit", *cli_args(eight_class_root, runs), "--model.backbone", "r3d_18",
              "--model.pretrained_2d", "torchvision_resnet50", "--trainer.max_steps", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert "model.pretrained_2d: ImageNet weights 'torchvision_resnet50'" in err and "pretrained_2d_file" in err
    assert not list(runs.rglob("*.ckpt"))
    # evaluating a trained checkpoint never loads the initial weights, so it runs offline with the same config
    assert main(["fit", *cli_args(eight_class_root, runs), "--trainer.max_steps", "1",
                 "--trainer.limit_val_batches", "0"]) == 0
    ckpt = sorted((runs / "tiny_r3d_bn").glob("version_*/checkpoints/last.ckpt"))[-1]
    assert main(["test", *cli_args(eight_class_root, runs), "--model.pretrained_2d", "torchvision_resnet50",
                 "--ckpt_path", str(ckpt)]) == 0


def test_precise_bn_on_test_for_imported_checkpoints(eight_class_root, tmp_path, capsys):
    from gnvideo.training.module import VideoClassifier

    ckpt = tmp_path / "imported.ckpt"
    torch.save({"state_dict": VideoClassifier(backbone="tiny_r3d", num_classes=8).state_dict()}, ckpt)
    args = [*cli_args(eight_class_root, tmp_path / "runs"), "--model.init_from", str(ckpt),
            "--precise_bn.num_batches", "2"]
    assert main(["test", *args]) == 0
    assert "precise BN:" not in capsys.readouterr().out  # off by default outside fit
    assert main(["test", *args, "--precise_bn.on_test", "true"]) == 0
    out = capsys.readouterr().out
    assert out.index("model.init_from") < out.index("precise BN: statistics of")  # weights first, then statistics
