"""2D -> 3D inflation from torchvision ResNet-50 state dicts (BN and GN)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import resnet50

from gnvideo.models import build_model, inflate_2d_state_dict


def _randomize_norms(net: nn.Module, seed: int = 0) -> None:
    """Give every norm non-trivial affine and running statistics so the comparison can fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        net.fc.bias.copy_(torch.randn(net.fc.bias.shape, generator=g))


def _static_clip_matches_2d(net2d: nn.Module, norm: str) -> None:
    torch.manual_seed(0)
    _randomize_norms(net2d)
    model = build_model("i3d_r50", num_classes=1000, norm=norm)
    report = inflate_2d_state_dict(model, net2d.state_dict(), mode="center")
    assert report.missing == [] and report.skipped == {}
    assert len(report.inflated) == 53
    net2d.eval().double()
    model.eval().double()
    frame = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    clip = frame.unsqueeze(2).repeat(1, 1, 8, 1, 1)  # static clip (N, 3, T=8, 64, 64)
    with torch.no_grad():
        expected = net2d(frame)
        got = model(clip)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-8)


def test_center_inflation_static_clip_matches_2d_bn():
    _static_clip_matches_2d(resnet50(weights=None), "bn")


def test_center_inflation_static_clip_matches_2d_gn():
    _static_clip_matches_2d(resnet50(weights=None, norm_layer=lambda c: nn.GroupNorm(32, c)), "gn")


def test_mean_mode_spreads_kernel_over_time_and_fc_skipped_on_class_mismatch(capsys):
    net2d = resnet50(weights=None)
    model = build_model("i3d_r50", num_classes=400, norm="frozen_bn")
    fc_before = model.fc.weight.detach().clone()
    report = inflate_2d_state_dict(model, {"module." + k: v for k, v in net2d.state_dict().items()}, verbose=True)
    w3d, w2d = model.conv1.weight.detach(), net2d.conv1.weight.detach()
    assert w3d.shape == (64, 3, 5, 7, 7)
    torch.testing.assert_close(w3d.sum(dim=2), w2d)
    torch.testing.assert_close(w3d[:, :, 0], w2d / 5)
    assert set(report.skipped) == {"module.fc.weight", "module.fc.bias"}
    assert "class count differs" in report.skipped["module.fc.weight"]
    assert torch.equal(model.fc.weight.detach(), fc_before)
    assert set(report.missing) == {"fc.weight", "fc.bias"}
    torch.testing.assert_close(model.layer1[0].norm1.running_var, net2d.layer1[0].bn1.running_var)
    out = capsys.readouterr().out
    assert "loaded" in out and "skipped" in out and "missing fc.weight" in out


def test_bn_state_into_gn_model_is_an_error_naming_the_layer():
    pattern = r"norm mismatch at layer 'norm1'.*holds BatchNorm.*GroupNorm3d.*bn, syncbn, frozen_bn or sub_bn"
    with pytest.raises(ValueError, match=pattern):
        inflate_2d_state_dict(build_model("r3d_18", norm="gn"), _r18_state(nn.BatchNorm2d))
    gn_state = _r18_state(lambda c: nn.GroupNorm(32, c))
    with pytest.raises(ValueError, match=r"norm mismatch at layer 'norm1'.*holds GroupNorm.*BatchNorm3d.*gn, ln or in"):
        inflate_2d_state_dict(build_model("r3d_18", norm="bn"), gn_state)
    with pytest.raises(ValueError, match=r"norm mismatch.*BatchGroupNorm3d"):
        inflate_2d_state_dict(build_model("r3d_18", norm="bgn"), gn_state)
    with pytest.raises(ValueError, match=r"mode must be one of"):
        inflate_2d_state_dict(build_model("r3d_18"), {}, mode="repeat")


def _r18_state(norm_layer) -> dict[str, torch.Tensor]:
    from torchvision.models import resnet18

    return resnet18(weights=None, norm_layer=norm_layer).state_dict()


def test_basic_block_inflation_r3d_18():
    model = build_model("r3d_18", num_classes=1000)
    report = inflate_2d_state_dict(model, _r18_state(nn.BatchNorm2d), mode="center")
    assert report.missing == [] and model.layer2[0].conv1.weight.shape == (128, 64, 3, 3, 3)
    assert float(model.layer2[0].conv1.weight.detach()[:, :, 0].abs().sum()) == 0.0
