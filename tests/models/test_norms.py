"""Each norm kind against a reference implementation, plus option validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gnvideo.models import (
    NORM_KINDS,
    BatchGroupNorm3d,
    FrozenBatchNorm3d,
    GroupNorm3d,
    InstanceNorm3d,
    LayerNorm3d,
    SubBatchNorm3d,
    build_norm,
)
from gnvideo.models.norms import norm_factory


def _randomize_affine(layer: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=g, dtype=layer.weight.dtype) + 0.5)
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=g, dtype=layer.bias.dtype))


def _x(n=4, c=16, t=3, h=5, w=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, t, h, w, generator=g, dtype=dtype) * 2.0 + 0.7


def test_bn_matches_batchnorm3d_train_and_eval():
    x = _x()
    ours = build_norm("bn", 16, eps=1e-3, momentum=0.2).double()
    ref = nn.BatchNorm3d(16, eps=1e-3, momentum=0.2).double()
    _randomize_affine(ours)
    ref.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x), ref(x))
    torch.testing.assert_close(ours.running_var, ref.running_var)
    ours.eval()
    ref.eval()
    torch.testing.assert_close(ours(x), ref(x))


def test_syncbn_kind_builds_syncbatchnorm():
    layer = build_norm("syncbn", 8, momentum=0.05)
    assert isinstance(layer, nn.SyncBatchNorm) and layer.momentum == 0.05


@pytest.mark.parametrize("activation", ["none", "relu", "silu"])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_gn_matches_f_group_norm(activation, use_kernel):
    x = _x(c=16)
    layer = build_norm("gn", 16, num_groups=4, activation=activation, use_kernel=use_kernel).double()
    _randomize_affine(layer)
    ref = F.group_norm(x, 4, layer.weight, layer.bias, 1e-5)
    ref = {"none": ref, "relu": F.relu(ref), "silu": F.silu(ref)}[activation]
    torch.testing.assert_close(layer(x), ref)


def test_gn_channels_per_group_and_default_groups():
    assert build_norm("gn", 64, channels_per_group=16).num_groups == 4
    assert build_norm("gn", 64).num_groups == 32
    assert build_norm("gn", 16).num_groups == 16  # default 32 capped at the channel count
    assert build_norm("bgn", 64, channels_per_group=8).num_groups == 8


def test_ln_and_in_equivalences():
    x = _x(c=8)
    ln = build_norm("ln", 8).double()
    inn = build_norm("in", 8).double()
    _randomize_affine(ln, 1)
    _randomize_affine(inn, 2)
    torch.testing.assert_close(ln(x), F.group_norm(x, 1, ln.weight, ln.bias, 1e-5))
    torch.testing.assert_close(inn(x), F.group_norm(x, 8, inn.weight, inn.bias, 1e-5))
    # LayerNorm over (C, T, H, W) with a per-channel affine; InstanceNorm per (sample, channel).
    mean = x.mean(dim=(1, 2, 3, 4), keepdim=True)
    var = x.var(dim=(1, 2, 3, 4), unbiased=False, keepdim=True)
    shape = (1, -1, 1, 1, 1)
    torch.testing.assert_close(
        ln(x), (x - mean) / torch.sqrt(var + 1e-5) * ln.weight.view(shape) + ln.bias.view(shape)
    )
    torch.testing.assert_close(inn(x), F.instance_norm(x, weight=inn.weight, bias=inn.bias, eps=1e-5))
    assert isinstance(ln, LayerNorm3d) and isinstance(inn, InstanceNorm3d)


def _bgn_reference(x, groups, weight, bias, eps, mean=None, var=None):
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    if mean is None:
        mean = xg.mean(dim=(0, 2))
        var = ((xg - mean.view(1, -1, 1)) ** 2).mean(dim=(0, 2))
    y = (xg - mean.view(1, -1, 1)) / torch.sqrt(var.view(1, -1, 1) + eps)
    y = y.reshape(x.shape)
    return y * weight.view(1, -1, 1, 1, 1) + bias.view(1, -1, 1, 1, 1)


def test_bgn_matches_float64_formula_in_train_and_eval():
    x = _x(n=3, c=16)
    layer = build_norm("bgn", 16, num_groups=4, momentum=0.3).double()
    assert isinstance(layer, BatchGroupNorm3d)
    _randomize_affine(layer)
    torch.testing.assert_close(layer(x), _bgn_reference(x, 4, layer.weight, layer.bias, 1e-5))
    xg = x.reshape(3, 4, -1)
    count = xg.shape[0] * xg.shape[2]
    batch_mean = xg.mean(dim=(0, 2))
    batch_var = xg.permute(1, 0, 2).reshape(4, -1).var(dim=1, unbiased=True)
    assert count > 1
    torch.testing.assert_close(layer.running_mean, 0.3 * batch_mean)
    torch.testing.assert_close(layer.running_var, 0.7 + 0.3 * batch_var)
    layer.eval()
    x2 = _x(n=2, c=16, seed=5)
    ref = _bgn_reference(x2, 4, layer.weight, layer.bias, 1e-5, layer.running_mean, layer.running_var)
    torch.testing.assert_close(layer(x2), ref)
    assert layer.running_mean.shape == (4,)


def test_sub_bn_equals_bn_per_group_outputs_and_running_stats():
    k, n = 2, 6
    x = _x(n=n, c=8)
    layer = build_norm("sub_bn", 8, clips_per_group=k, momentum=0.25).double()
    _randomize_affine(layer)
    with torch.no_grad():
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    initial = {name: v.clone() for name, v in layer.state_dict().items()}
    y = layer(x)
    copies = []
    for g in range(n // k):
        bn = nn.BatchNorm3d(8, momentum=0.25).double()
        bn.load_state_dict(initial)
        torch.testing.assert_close(y[g * k:(g + 1) * k], bn(x[g * k:(g + 1) * k]))
        copies.append(bn)
    torch.testing.assert_close(layer.running_mean, torch.stack([b.running_mean for b in copies]).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack([b.running_var for b in copies]).mean(0))
    layer.eval()
    ref = nn.BatchNorm3d(8).double().eval()
    ref.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), ref(x))


@pytest.mark.parametrize("k", [1, 2, 6])
def test_sub_bn_gradients_equal_bn_per_group(k):
    n = 6
    x = _x(n=n, c=8).requires_grad_()
    layer = build_norm("sub_bn", 8, clips_per_group=k).double()
    _randomize_affine(layer)
    copies = [nn.BatchNorm3d(8).double() for _ in range(n // k)]
    for bn in copies:
        bn.load_state_dict(layer.state_dict())
    xr = x.detach().clone().requires_grad_()
    y = layer(x)
    ref = torch.cat([bn(xr[g * k:(g + 1) * k]) for g, bn in enumerate(copies)])
    torch.testing.assert_close(y, ref)
    upstream = torch.randn_like(y)
    (y * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad)
    torch.testing.assert_close(layer.weight.grad, sum(bn.weight.grad for bn in copies))
    torch.testing.assert_close(layer.bias.grad, sum(bn.bias.grad for bn in copies))


def test_sub_bn_one_value_per_channel_normalizes_to_the_bias():
    layer = build_norm("sub_bn", 8, clips_per_group=1).double()  # 1 clip of 1 x 1 x 1 per group, as BN on 1 value
    _randomize_affine(layer)
    y = layer(_x(n=2, c=8, t=1, h=1, w=1))
    torch.testing.assert_close(y, layer.bias.view(1, -1, 1, 1, 1).expand(2, -1, -1, -1, -1))
    assert torch.isfinite(layer.running_var).all()


def test_sub_bn_half_precision_input_takes_fp32_statistics():
    layer = build_norm("sub_bn", 8, clips_per_group=2)  # float32 parameters, bf16 input: the elementwise path
    _randomize_affine(layer)
    ref = build_norm("sub_bn", 8, clips_per_group=2)
    ref.load_state_dict(layer.state_dict())
    x = _x(n=4, c=8, dtype=torch.float32)
    torch.testing.assert_close(layer(x.bfloat16()).float(), ref(x), atol=0.05, rtol=0.02)
    torch.testing.assert_close(layer.running_var, ref.running_var, atol=0.02, rtol=0.02)


def test_sub_bn_channels_last_and_bad_batch():
    layer = build_norm("sub_bn", 8, clips_per_group=2).double()
    x = _x(n=4, c=8)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last_3d)), layer(x))
    with pytest.raises(ValueError, match=r"N=5.*clips_per_group=2"):
        layer(_x(n=5, c=8))
    assert isinstance(layer, SubBatchNorm3d)


def test_frozen_bn_is_eval_like_and_loads_bn_state():
    bn = nn.BatchNorm3d(8).double()
    _randomize_affine(bn)
    bn(_x(c=8))  # move running stats away from (0, 1)
    bn.eval()
    frozen = build_norm("frozen_bn", 8).double()
    frozen.load_state_dict(bn.state_dict())
    frozen.train()
    x = _x(c=8, seed=3)
    torch.testing.assert_close(frozen(x), bn(x))
    assert isinstance(frozen, FrozenBatchNorm3d) and list(frozen.parameters()) == []


@pytest.mark.parametrize("kind", [k for k in NORM_KINDS if k != "syncbn"])
def test_gradients_reach_every_parameter(kind):
    opts = {"clips_per_group": 2} if kind == "sub_bn" else {}
    layer = build_norm(kind, 8, **opts)
    x = _x(n=4, c=8, dtype=torch.float32).requires_grad_()
    (layer(x) * torch.randn_like(x)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_num_features_keyword_and_pytorchvideo_factory():
    assert GroupNorm3d(num_features=64, num_groups=8).num_channels == 64
    assert LayerNorm3d(num_features=8).num_groups == 1
    assert InstanceNorm3d(num_features=8).num_groups == 8
    assert BatchGroupNorm3d(num_features=16, num_groups=4).num_groups == 4
    assert SubBatchNorm3d(num_features=8, clips_per_group=2).num_features == 8
    assert FrozenBatchNorm3d(num_features=8).num_features == 8
    make = norm_factory("gn", num_groups=8)
    layer = make(num_features=32, eps=1e-5, momentum=0.1)  # pytorchvideo builders call it this way
    assert isinstance(layer, GroupNorm3d) and layer.num_groups == 8


@pytest.mark.parametrize(
    ("kind", "channels", "options", "pattern"),
    [
        ("gn", 48, {"num_groups": 32}, r"num_channels=48.*num_groups=32.*allowed num_groups"),
        ("gn", 48, {"channels_per_group": 5}, r"channels_per_group=5.*allowed"),
        ("gn", 48, {"num_groups": 0}, r"num_channels=48.*num_groups must be an integer >= 1"),
        ("gn", 48, {"num_groups": 4, "channels_per_group": 12}, r"not both"),
        ("bgn", 24, {"num_groups": 5}, r"num_channels=24.*num_groups=5"),
        ("gn", 32, {"momentum": 0.1}, r"unknown option.*momentum.*allowed"),
        ("ln", 32, {"num_groups": 2}, r"unknown option.*num_groups"),
        ("bn", 32, {"activation": "relu"}, r"num_channels=32.*unknown option.*activation"),
        ("sub_bn", 32, {}, r"clips_per_group is required"),
        ("sub_bn", 32, {"clips_per_group": 0}, r"clips_per_group must be"),
        ("gn", 32, {"activation": "gelu"}, r"activation must be one of"),
        ("bn", 32, {"eps": -1.0}, r"eps must be"),
        ("bgn", 32, {"momentum": 2.0}, r"momentum must be"),
        ("batchnorm", 32, {}, r"unknown norm kind 'batchnorm'.*'bn', 'syncbn'"),
    ],
)
def test_bad_options_raise_value_error(kind, channels, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        build_norm(kind, channels, **options)


# ---------------------------------------------------------------- the registry is the one table everything reads
def test_registry_rows_build_their_layer_and_reject_other_options():
    from gnvideo.models.norms import NORMS

    for name, row in NORMS.items():
        if name == "syncbn":
            continue  # needs a process group in forward only; construction is covered by build_norm below
        opts = {o: 2 for o in row.required}
        layer = build_norm(name, 64, **opts)
        assert type(layer) is row.layer_class, name
        with pytest.raises(ValueError, match=r"unknown option\(s\) \['nope'\]"):
            build_norm(name, 64, nope=1, **opts)
    assert type(build_norm("syncbn", 8)) is torch.nn.SyncBatchNorm


def test_derived_lists_follow_the_table():
    from gnvideo.models import norms

    assert norms.NORM_KINDS == tuple(norms.NORMS)
    assert set(norms.FUSED_ACTIVATION_KINDS) == {"gn", "ln", "in"}
    assert set(norms.BATCH_DEPENDENT_KINDS) == {"bn", "syncbn", "sub_bn", "bgn"}  # frozen_bn has fixed statistics
    assert norms.kinds_of_family("bn") == ("bn", "syncbn", "frozen_bn", "sub_bn")
    assert norms.kinds_of_family("gn") == ("gn", "ln", "in")
    assert norms.REPORT_ORDER[:1] == ("bn",) and "sub_bn" not in norms.REPORT_ORDER  # sub_bn fills the BN row
    assert norms.report_row("sub_bn") == "bn" and norms.report_row("mystery") == "mystery"
    assert norms.REPORT_ORDER.index("gn") < norms.REPORT_ORDER.index("bgn")
    for kind in norms.NORM_KINDS:
        assert norms.family_of(build_norm(kind, 16, **{o: 2 for o in norms.NORMS[kind].required})) == \
            norms.NORMS[kind].family
    assert norms.family_of(torch.nn.BatchNorm2d(4)) == "bn" and norms.family_of(torch.nn.GroupNorm(2, 4)) == "gn"
    assert norms.family_of(torch.nn.Conv3d(1, 1, 1)) is None
    table = norms.norm_table_markdown()
    assert all(f"| `{k}` |" in table for k in norms.NORM_KINDS) and "`clips_per_group` (required)" in table


def test_demo_and_report_take_their_choices_from_the_registry():
    import typing

    import pytest

    from gnvideo import demo, report
    from gnvideo.models.norms import DEMO_KINDS, REPORT_ORDER

    assert typing.get_args(demo.DemoNorm) == tuple(DEMO_KINDS)  # the type of the demo's --norms option
    assert demo.parser().parse_args(["--norms", f"[{DEMO_KINDS[-1]}]"]).norms == [DEMO_KINDS[-1]]
    with pytest.raises(SystemExit):
        demo.parser().parse_args(["--norms", "[frozen_bn]"])  # not a demo kind
    assert report._row_order(["bgn", "gn", "bn", "in"]) == [k for k in REPORT_ORDER if k in {"bgn", "gn", "bn", "in"}]


def test_readme_norm_table_matches_the_registry():
    from pathlib import Path

    from gnvideo.models.norms import NORMS

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Normalization layers"):text.index("## The GroupNorm kernel")]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| `")]
    seen = set()
    for cells in rows:
        kinds = [k.strip(" `") for k in cells[0].split("/")]
        for kind in kinds:
            row = NORMS[kind]
            assert cells[3].strip() == ("yes" if row.batch_dependent else "no"), kind
            assert cells[4].strip() == row.family, kind
            for opt in row.options:
                if opt != "activation":
                    assert f"`{opt}`" in cells[2], (kind, opt)
            seen.add(kind)
    assert seen == set(NORMS)
