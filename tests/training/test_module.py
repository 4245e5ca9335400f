"""VideoClassifier pieces without a Trainer run: LR scaling and schedules, parameter groups, eval-row dropping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gnvideo.module import VideoClassifier, lr_factor


def _model(**kw) -> VideoClassifier:
    return VideoClassifier(**{"backbone": "tiny_r3d", "num_classes": 6, "norm": "gn", "norm_options": {"num_groups": 4},
                              **kw})


def _optimizers(model: VideoClassifier, world_size: int, accumulate: int, steps: int):
    model.trainer = SimpleNamespace(world_size=world_size, accumulate_grad_batches=accumulate,
                                    estimated_stepping_batches=steps)
    cfg = model.configure_optimizers()
    return cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]


def test_step_schedule_and_linear_scaling():
    m = _model(clips_per_device=4, base_lr=0.01, base_batch_size=64, weight_decay=1e-4)
    opt, sched = _optimizers(m, world_size=8, accumulate=2, steps=800)  # 4 x 8 x 2 = 64 clips per step
    assert [g["lr"] for g in opt.param_groups] == [pytest.approx(0.01)] * len(opt.param_groups)
    assert opt.defaults["momentum"] == 0.9 and not opt.defaults["nesterov"]
    lrs = []
    for _ in range(800):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == lrs[299] == pytest.approx(0.01)  # /10 at 37.5% (step 300) and 75% (step 600)
    assert lrs[300] == lrs[599] == pytest.approx(0.001)
    assert lrs[600] == lrs[799] == pytest.approx(0.0001)
    opt, _ = _optimizers(_model(clips_per_device=4), world_size=2, accumulate=1, steps=10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * 8 / 64)


def test_cosine_with_warmup():
    assert lr_factor(0, 100, "cosine", warmup_steps=10) == pytest.approx(0.01)
    assert lr_factor(5, 100, "cosine", warmup_steps=10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, 100, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", warmup_steps=10) == pytest.approx(0.0, abs=1e-12)


def test_weight_decay_exemption_and_nesterov():
    opt, _ = _optimizers(_model(nesterov=True), 1, 1, 10)
    decay = {g["name"]: g["weight_decay"] for g in opt.param_groups}
    assert decay == {"decay": 1e-4, "no_decay": 0.0} and opt.defaults["nesterov"]
    opt, _ = _optimizers(_model(exempt_norm_and_bias=False), 1, 1, 10)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4]


def test_schedule_needs_a_length():
    with pytest.raises(ValueError, match="max_steps"):
        _optimizers(_model(), 1, 1, float("inf"))


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


def test_init_from_gnvideo_checkpoint(tmp_path):
    src = _model()
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": src.state_dict()}, path)
    dst = _model(init_from=str(path))
    for (k, a), b in zip(src.model.state_dict().items(), dst.model.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(FileNotFoundError, match="model.init_from"):
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
    w = dst.model.state_dict()["layer1.0.conv1.weight"]  # (O, I, 3, 3, 3)
    assert torch.equal(w[:, :, 1], src.model.state_dict()["layer1.0.conv1.weight"][:, :, 1])
    assert not w[:, :, 0].any()
    with pytest.raises(ValueError, match="model.pretrained_2d"):
        _model(pretrained_2d=str(path))  # BN weights into a GN model
