"""Data options of the recipe: input mean/std presets (recorded as hyperparameters), a held-out validation split."""

from __future__ import annotations

import pytest
import torch

from gnvideo.data import KineticsDataModule
from gnvideo.data.transforms import MEAN_STD_PRESETS


def _dm(root, **kw):
    return KineticsDataModule(str(root), num_workers=0, num_frames=4, sampling_rate=2, train_short_side=(32, 32),
                              crop_size=32, test_short_side=32, test_crop_size=32, pin_memory=False,
                              persistent_workers=False, **kw)


def test_mean_std_presets_are_applied_and_recorded(synthetic_root):
    a, b = _dm(synthetic_root), _dm(synthetic_root, mean_std="pytorchvideo")
    assert (a.hparams.mean, a.hparams.std) == MEAN_STD_PRESETS["imagenet"]
    assert (b.hparams.mean, b.hparams.std) == ((0.45,) * 3, (0.225,) * 3)
    a.setup("validate")
    b.setup("validate")
    xa, xb = a.val_dataset[0]["video"], b.val_dataset[0]["video"]
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
