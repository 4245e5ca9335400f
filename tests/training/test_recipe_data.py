"""Data options of the recipe: input mean/std presets (recorded as hyperparameters), a held-out validation split."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gnvideo.data import KineticsDataModule
from gnvideo.data.transforms import MEAN_STD_PRESETS


def _dm(root, **kw):
    return KineticsDataModule(str(root), num_workers=0, num_frames=4, sampling_rate=2, train_short_side_range=(32, 32),
                              train_crop_size=32, val_short_side=32, val_crop_size=32, test_short_side=32,
                              test_crop_size=32, pin_memory=False,
                              persistent_workers=False, **kw)


def test_mean_std_presets_are_applied_and_recorded(synthetic_root):
    a, b = _dm(synthetic_root), _dm(synthetic_root, mean_std="pytorchvideo")
    assert (a.hparams.mean, a.hparams.std) == MEAN_STD_PRESETS["imagenet"]
    assert (b.hparams.mean, b.hparams.std) == ((0.45,) * 3, (0.225,) * 3)
    a.setup("validate")
    b.setup("validate")
    ua, ub = a.val_dataset[0]["video"], b.val_dataset[0]["video"]
    assert ua.dtype == torch.uint8 and torch.equal(ua, ub)  # workers do not normalise
    xa, xb = a.batch_transform(ua.unsqueeze(0))[0], b.batch_transform(ub.unsqueeze(0))[0]  # the device does
    mean, std = MEAN_STD_PRESETS["imagenet"]
    for c in range(3):  # the same pixels under both normalizations
        torch.testing.assert_close(xa[c] * std[c] + mean[c], xb[c] * 0.225 + 0.45, atol=1e-5, rtol=0)
    custom = _dm(synthetic_root, mean=(0.5, 0.5, 0.5))
    assert custom.hparams.mean == (0.5, 0.5, 0.5) and custom.hparams.std == MEAN_STD_PRESETS["imagenet"][1]
    with pytest.raises(ValueError, match=r"data.mean_std: unknown preset 'caffe'"):
        _dm(synthetic_root, mean_std="caffe")


def test_holdout_split_comes_from_train_and_leaves_the_scored_set(synthetic_root):
    dm = _dm(synthetic_root, holdout_fraction=0.25)
    dm.setup("fit")
    train = {e.path for e in dm.train_dataset.entries}
    val = {e.path for e in dm.val_dataset.entries}
    assert len(val) == 6 and len(train) == 18 and not train & val  # 24 training videos
    assert all("/train/" in p for p in val) and dm.val_dataset.mode == "val"
    dm.setup("test")
    assert not val & {e.path for e in dm.test_dataset.entries}
    again = _dm(synthetic_root, holdout_fraction=0.25)
    again.setup("fit")
    assert {e.path for e in again.val_dataset.entries} == val  # a fixed draw from the seed
    with pytest.raises(ValueError, match="data.holdout_fraction"):
        _dm(synthetic_root, holdout_fraction=1.0)


def test_full_frame_test_view(synthetic_root, tmp_path):
    """The whole frame at the test short side, one view per clip, one video per batch; the model takes any size."""
    from gnvideo.data import open_video, views_of
    from gnvideo.training.module import VideoClassifier

    dm = _dm(synthetic_root, test_view="full_frame", test_num_clips=2, test_num_crops=3)
    dm.setup("test")
    ds = dm.test_dataset
    assert ds.views_per_video == 2  # crops are ignored
    sample = ds[0]
    with open_video(ds.entries[0].path) as reader:
        frame_h, frame_w = reader.frames([0]).shape[1:3]
    views = views_of(sample)
    assert views.shape[:3] == (2, 4, 32) and views.shape[4] == 3  # (views, T, H, W, 3)
    assert views.shape[3] == round(frame_w * 32 / min(frame_h, frame_w))
    batch = next(iter(dm.test_dataloader()))
    assert views_of(batch).shape[0] == 2 and batch["video_index"].tolist() == [0, 0]  # one video, its 2 views
    model = VideoClassifier(backbone="tiny_r3d", num_classes=6, head_pool="local").eval()
    model.batch_transform = dm.batch_transform
    with torch.no_grad():
        assert model(model.on_after_batch_transfer(batch, 0)["video"]).shape == (2, 6)
    with pytest.raises(ValueError, match="data.test_view"):
        _dm(synthetic_root, test_view="ten_crop")


def test_input_statistics_follow_the_imagenet_weights_unless_set(synthetic_root, tmp_path, monkeypatch):
    """data.mean/std come from the source named by model.pretrained_2d; an explicit data setting wins."""
    import dataclasses

    from gnvideo.models import weights
    from gnvideo.training.runner import build_cli

    source = weights.IMAGENET_SOURCES["timm_resnet50_gn"]
    monkeypatch.setitem(weights.IMAGENET_SOURCES, "timm_resnet50_gn",
                        dataclasses.replace(source, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2)))
    base = ["--data.root", str(synthetic_root), "--data.num_workers", "0", "--model.backbone", "tiny_r3d",
            "--model.norm", "gn", "--model.pretrained_2d", "timm_resnet50_gn", "--trainer.default_root_dir",
            str(tmp_path)]
    follows = build_cli(base, run=False).datamodule.hparams
    assert (follows.mean, follows.std) == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    chosen = build_cli([*base, "--data.mean_std", "pytorchvideo"], run=False).datamodule.hparams
    assert (chosen.mean, chosen.std) == MEAN_STD_PRESETS["pytorchvideo"]
    scratch = build_cli([*base[:-4], "--trainer.default_root_dir", str(tmp_path)], run=False).datamodule.hparams
    assert (scratch.mean, scratch.std) == MEAN_STD_PRESETS["imagenet"]  # no ImageNet weights: the default


def test_holdout_counts_missing_videos_of_each_part(synthetic_root, tmp_path, caplog):
    """Missing files are counted on the part they fall in, so the usable count of the training part is right."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    dm = _dm(root, holdout_fraction=0.25)
    dm.setup("fit")
    gone = [e.path for e in dm.train_dataset.entries[:3]] + [dm.val_dataset.entries[0].path]
    for path in gone:
        Path(path).unlink()
    again = _dm(root, holdout_fraction=0.25)
    again.setup("fit")
    assert again.train_dataset.num_missing == 3 and again.val_dataset.num_missing == 1
    assert again.train_dataset.num_videos == 18 and len(again.train_dataset._failures) == 18
    again.hparams.clips_per_device = 19
    with pytest.raises(ValueError, match=r"data.clips_per_device: the train split has 15 usable videos \(24 listed "
                                         r"in .*, 6 held out for validation, 3 of the 18 training videos missing\)"):
        again._check_batches()


def test_decode_short_side_is_a_data_setting(synthetic_root):
    dm = _dm(synthetic_root, decode_short_side=24)
    dm.setup("validate")
    assert dm.val_dataset.decode_short_side == 24
