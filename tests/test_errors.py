"""One error type for bad settings: raised where a value is checked, its key prefixed by each caller that renames it."""

from __future__ import annotations

import pickle

import pytest

from gnvideo.errors import ConfigError, config_prefix


def test_under_and_prefix_build_the_full_key():
    err = ConfigError("num_groups", "must divide 64")
    assert str(err.under("model.norm_options.")) == "model.norm_options.num_groups: must divide 64"
    with pytest.raises(ConfigError) as info:
        with config_prefix("data."), config_prefix("train_"):
            raise ConfigError("crop_size", "too large")
    assert info.value.key == "data.train_crop_size" and info.value.message == "too large"
    assert isinstance(info.value, ValueError)


class Special(ConfigError):
    pass


def test_subclasses_and_pickling_keep_the_key():
    err = Special("init_from", "not a checkpoint").under("model.")
    assert type(err) is Special and err.key == "model.init_from"
    again = pickle.loads(pickle.dumps(err))  # crosses DataLoader workers
    assert type(again) is Special and str(again) == str(err)


def test_other_errors_pass_through_the_prefix_unchanged():
    with pytest.raises(KeyError):
        with config_prefix("model."):
            raise KeyError("x")


@pytest.mark.parametrize("kwargs, key", [
    ({"norm": "gn", "norm_options": {"num_groups": 5}}, "model.norm_options.num_groups"),
    ({"norm": "group"}, "model.norm"),
    ({"backbone": "resnet9000"}, "model.backbone"),
    ({"dropout": 1.5}, "model.dropout"),
    ({"warmup_fraction": 1.0}, "model.warmup_fraction"),
    ({"schedule": "poly"}, "model.schedule"),
    ({"pretrained_2d": "imagenet_please"}, "model.pretrained_2d"),
])
def test_the_module_names_the_key_of_a_bad_model_setting(kwargs, key):
    from gnvideo.training.module import VideoClassifier

    with pytest.raises(ConfigError) as info:
        VideoClassifier(**{"backbone": "tiny_r3d", "num_classes": 8, **kwargs})
    assert info.value.key == key
