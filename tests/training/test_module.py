"""VideoClassifier pieces without a Trainer run: forward options, eval-row dropping, weight options."""

from __future__ import annotations

import pytest
import torch

from gnvideo.errors import ConfigError
from gnvideo.training.module import VideoClassifier


def _model(**kw) -> VideoClassifier:
    return VideoClassifier(**{"backbone": "tiny_r3d", "num_classes": 6, "norm": "gn", "norm_options": {"num_groups": 4},
                              **kw})


def test_channels_last_and_label_smoothing_forward():
    m = _model(channels_last=True, label_smoothing=0.1)
    conv = next(p for p in m.parameters() if p.ndim == 5)
    assert conv.is_contiguous(memory_format=torch.channels_last_3d)
    assert m(torch.randn(2, 3, 4, 32, 32)).shape == (2, 6)


def test_validation_and_test_drop_invalid_rows():
    m = _model().eval()
    seen = []
    m.model.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    batch = {"video": torch.randn(3, 3, 4, 32, 32), "label": torch.tensor([0, 1, 2]),
             "video_index": torch.tensor([0, 1, 1]), "view_index": torch.tensor([0, 0, 1]),
             "valid": torch.tensor([True, False, True])}
    m.log = lambda *a, **k: None
    m.validation_step(batch, 0)
    m.test_step(batch, 0)
    assert seen == [2, 2]
    scores = m.test_views.local_scores()
    assert scores.view_counts.tolist() == [1, 1] and scores.invalid_counts.tolist() == [0, 1]
    assert scores.scored.tolist() == [True, False]


def test_test_views_per_forward():
    batch = {"video": torch.randn(5, 3, 4, 32, 32), "label": torch.zeros(5, dtype=torch.long),
             "video_index": torch.zeros(5, dtype=torch.long), "view_index": torch.arange(5),
             "valid": torch.ones(5, dtype=torch.bool)}
    for options, forwards in (({"clips_per_device": 2}, [2, 2, 1]), ({"clips_per_device": 1,
                                                                       "test_clips_per_forward": 12}, [5])):
        m = _model(**options).eval()
        seen = []
        m.model.register_forward_hook(lambda mod, args, out, seen=seen: seen.append(args[0].shape[0]))
        m.test_step(batch, 0)
        assert seen == forwards
    with pytest.raises(ValueError, match="model.test_clips_per_forward: must be >= 1"):
        _model(test_clips_per_forward=0)


def test_init_from_gnvideo_checkpoint(tmp_path):
    src = _model()
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = _model(init_from=str(path))
    dst.load_initial_weights()  # a Trainer run does this at its start
    for (k, a), b in zip(src.model.state_dict().items(), dst.model.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="^model.init_from: file .* does not exist"):
        _model(init_from=str(tmp_path / "missing.ckpt"))


def test_pretrained_2d_is_inflated(tmp_path):
    src = _model(norm="bn", norm_options={})
    sd2d = {}
    for k, v in src.model.state_dict().items():  # a 2D ResNet in torchvision naming: center frame, bnZ
        k2 = ".".join("bn" + p[4:] if p.startswith("norm") and p[4:].isdigit() else p for p in k.split("."))
        sd2d[k2] = v[:, :, v.shape[2] // 2] if v.ndim == 5 else v
    path = tmp_path / "r2d.pth"
    torch.save(sd2d, path)
    dst = _model(norm="bn", norm_options={}, pretrained_2d=str(path), inflate_mode="center")
    dst.load_initial_weights()
    w = dst.model.state_dict()["layer1.0.conv1.weight"]  # (O, I, 3, 3, 3)
    assert torch.equal(w[:, :, 1], src.model.state_dict()["layer1.0.conv1.weight"][:, :, 1])
    assert not w[:, :, 0].any()
    with pytest.raises(ValueError, match="model.pretrained_2d"):
        _model(pretrained_2d=str(path)).load_initial_weights()  # BN weights into a GN model


def test_lightning_configure_model_hook_builds_nothing():
    """The Trainer calls ``configure_model`` at every fit: building the network there again would draw from the
    global RNG and change the run (the network is built once, in ``__init__``)."""
    m = VideoClassifier(backbone="tiny_r3d", num_classes=8)
    state = torch.get_rng_state()
    m.configure_model()
    assert torch.equal(state, torch.get_rng_state())
