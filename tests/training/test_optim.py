"""gnvideo.training.optim: LR scaling, the step schedule of the Non-local recipe, parameter groups, Nesterov."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from gnvideo.models import GroupNorm3d, build_model
from gnvideo.training.module import VideoClassifier
from gnvideo.training.optim import build_optimizer, lr_factor, parameter_groups, scaled_lr


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
    assert scaled_lr(0.01, 128) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="total_batch"):
        scaled_lr(0.01, 0)


def test_non_local_iterations():
    """400k iterations, LR x0.1 after 150k and 300k: the recipe's STEP_SIZES [150000, 150000, 100000]."""
    assert lr_factor(149_999, 400_000, "step") == 1.0
    assert lr_factor(150_000, 400_000, "step") == pytest.approx(0.1)
    assert lr_factor(299_999, 400_000, "step") == pytest.approx(0.1)
    assert lr_factor(300_000, 400_000, "step") == pytest.approx(0.01)


def test_cosine_with_warmup():
    assert lr_factor(0, 100, "cosine", warmup_steps=10) == pytest.approx(0.01)
    assert lr_factor(5, 100, "cosine", warmup_steps=10) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, 100, "cosine", warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor(55, 100, "cosine", warmup_steps=10) == pytest.approx(0.5)
    assert lr_factor(100, 100, "cosine", warmup_steps=10) == pytest.approx(0.0, abs=1e-12)


def test_recipe_exempts_norms_but_decays_the_fc_bias():
    model = build_model("tiny_r3d", norm="gn")
    decay, no_decay = parameter_groups(model, weight_decay=1e-4, no_weight_decay="norm")
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    ids = {id(p) for p in no_decay["params"]}
    norm_params = {id(p) for m in model.modules() if isinstance(m, GroupNorm3d) for p in m.parameters()}
    assert ids == norm_params  # only norm scale and shift
    assert id(model.fc.bias) in {id(p) for p in decay["params"]}  # pred_b is decayed in the Non-local code
    _, no_decay = parameter_groups(model, 1e-4, no_weight_decay="norm_and_bias")
    assert id(model.fc.bias) in {id(p) for p in no_decay["params"]}
    assert all(p.dim() == 1 for p in no_decay["params"])
    single = parameter_groups(model, 1e-4, no_weight_decay="none")
    assert len(single) == 1 and len(single[0]["params"]) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="no_weight_decay"):
        parameter_groups(model, 1e-4, no_weight_decay="bias")


def test_nesterov_and_groups_reach_sgd():
    opt, _ = _optimizers(_model(nesterov=True, no_weight_decay="norm"), 1, 1, 10)
    assert opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"decay": 1e-4, "no_decay": 0.0}


def test_schedule_needs_a_length_and_known_names():
    with pytest.raises(ValueError, match="max_steps"):
        _optimizers(_model(), 1, 1, float("inf"))
    with pytest.raises(ValueError, match="^schedule: must be one of"):
        build_optimizer(torch.nn.Linear(2, 2), 0.1, 10, schedule="poly")
