"""Data options of the recipe: input mean/std presets (recorded as hyperparameters), a held-out validation split."""

from __future__ import annotations

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
    from gnvideo.data import open_video
    from gnvideo.module import VideoClassifier

    dm = _dm(synthetic_root, test_view="full_frame", test_num_clips=2, test_num_crops=3)
    dm.setup("test")
    ds = dm.test_dataset
    assert ds.views_per_video == 2  # crops are ignored
    sample = ds[0]
    with open_video(ds.entries[0].path) as reader:
        frame_h, frame_w = reader.frames([0]).shape[1:3]
    assert sample["video"].shape[:3] == (2, 4, 32) and sample["video"].shape[4] == 3  # (views, T, H, W, 3)
    assert sample["video"].shape[3] == round(frame_w * 32 / min(frame_h, frame_w))
    batch = next(iter(dm.test_dataloader()))
    assert batch["video"].shape[0] == 2 and batch["video_index"].tolist() == [0, 0]  # one video, its 2 views
    model = VideoClassifier(backbone="tiny_r3d", num_classes=6, head_pool="local").eval()
    with torch.no_grad():
        assert model(dm.batch_transform(batch["video"])).shape == (2, 6)
    with pytest.raises(ValueError, match="data.test_view"):
        _dm(synthetic_root, test_view="ten_crop")
