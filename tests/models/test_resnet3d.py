"""3D ResNet builder and presets: shapes, parameter count, init, fused activations, optimizer groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnvideo.models import PRESETS, GroupNorm3d, ResNet3d, build_model
from gnvideo.models.__main__ import main as cli_main


def _res5_shape(model: nn.Module, x: torch.Tensor) -> tuple[torch.Size, torch.Tensor]:
    shapes = []
    handle = model.layer4.register_forward_hook(lambda m, i, o: shapes.append(o.shape))
    out = model(x)
    handle.remove()
    return shapes[0], out


def test_i3d_r50_parameter_count_and_full_size_forward():
    torch.manual_seed(0)
    model = build_model("i3d_r50", num_classes=400).eval()
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 28.0e6) / 28.0e6 < 0.01, params
    with torch.no_grad():
        res5, out = _res5_shape(model, torch.randn(2, 3, 32, 224, 224))
    assert tuple(out.shape) == (2, 400)
    assert tuple(res5) == (2, 2048, 4, 7, 7)
    assert torch.isfinite(out).all()


def test_i3d_r50_64_frames_gives_8_temporal_positions():
    model = build_model("i3d_r50").eval()
    with torch.no_grad():
        res5, _ = _res5_shape(model, torch.zeros(1, 3, 64, 32, 32))
    assert res5[2] == 8


@pytest.mark.parametrize(
    ("name", "frames", "t_out"),
    [("i3d_r50_pytorchvideo", 8, 4), ("slow_r50", 8, 8), ("r3d_18", 16, 2), ("tiny_r3d", 8, 1)],
)
def test_temporal_output_sizes(name, frames, t_out):
    model = build_model(name).eval()
    with torch.no_grad():
        res5, _ = _res5_shape(model, torch.zeros(1, 3, frames, 32, 32))
    assert res5[2] == t_out


@pytest.mark.parametrize("norm", ["bn", "gn", "bgn"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_output_shape(name, norm):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, norm=norm)
    out = model(torch.randn(2, 3, 8, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_channels_last_3d_end_to_end(norm):
    torch.manual_seed(0)
    model = build_model("tiny_r3d", num_classes=5, norm=norm, dropout=0.0, zero_init_residual=False).double()
    x = torch.randn(2, 3, 8, 48, 48, dtype=torch.float64)
    ref = model(x)
    ref.sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model_cl = model.to(memory_format=torch.channels_last_3d)
    out = model_cl(x.to(memory_format=torch.channels_last_3d))
    out.sum().backward()
    assert model_cl.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(out, ref)
    for g, r in zip((p.grad for p in model_cl.parameters()), ref_grads):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("norm", ["bn", "gn", "bgn", "sub_bn", "ln", "in", "frozen_bn"])
def test_gradients_reach_every_parameter(norm):
    torch.manual_seed(0)
    opts = {"clips_per_group": 2} if norm == "sub_bn" else None
    model = build_model("tiny_r3d", num_classes=4, norm=norm, norm_options=opts, zero_init_residual=False)
    out = model(torch.randn(4, 3, 8, 64, 64))  # res5 1x2x2: "in" needs more than one value per channel
    nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_zero_init_residual(norm):
    model = build_model("i3d_r50", norm=norm)
    blocks = [m for m in model.modules() if hasattr(m, "last_norm")]
    assert len(blocks) == 16
    assert all(float(b.last_norm.weight.detach().abs().sum()) == 0.0 for b in blocks)
    assert all(float(b.norm1.weight.detach().min()) == 1.0 for b in blocks)
    model = build_model("r3d_18", norm=norm, zero_init_residual=False)
    assert all(float(m.last_norm.weight.detach().min()) == 1.0 for m in model.modules() if hasattr(m, "last_norm"))


def test_fused_activation_for_gn_family_only():
    gn = build_model("r3d_10", norm="gn")
    assert isinstance(gn.norm1, GroupNorm3d) and gn.norm1.activation == "relu" and isinstance(gn.act1, nn.Identity)
    assert gn.layer1[0].norm1.activation == "relu" and gn.layer1[0].norm2.activation == "none"
    bn = build_model("i3d_r50", norm="bn")
    assert isinstance(bn.act1, nn.ReLU) and isinstance(bn.layer1[0].act2, nn.ReLU)
    ln = build_model("slow_r50", norm="ln")
    assert ln.layer3[0].norm2.activation == "relu" and ln.layer3[0].norm3.activation == "none"


def test_norm_options_reach_every_norm():
    model = build_model("r3d_18", norm="gn", norm_options={"num_groups": 8, "eps": 1e-4})
    norms = [m for m in model.modules() if isinstance(m, GroupNorm3d)]
    assert len(norms) > 10 and all(m.num_groups == 8 and m.eps == 1e-4 for m in norms)
    with pytest.raises(ValueError, match=r"num_channels=64.*num_groups=48"):
        build_model("r3d_18", norm="gn", norm_options={"num_groups": 48})


def test_tiny_r3d_train_step_on_demo_batch():
    torch.manual_seed(0)
    model = build_model("tiny_r3d", num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 8, 64, 64), torch.randint(0, 10, (8,))
    before = model.conv1.weight.detach().clone()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.conv1.weight)


def test_build_model_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet50'.*i3d_r50"):
        build_model("resnet50")
    with pytest.raises(ValueError, match=r"unknown override.*bogus"):
        build_model("i3d_r50", bogus=1)
    with pytest.raises(ValueError, match=r"^norm: unknown norm kind 'xn'"):
        build_model("i3d_r50", norm="xn")
    with pytest.raises(ValueError, match=r"temporal_kernels for res3 has 2 entries"):
        ResNet3d(temporal_kernels=(1, (3, 1), 1, 1))
    with pytest.raises(ValueError, match=r"expected input \(N, C, T, H, W\)"):
        build_model("tiny_r3d")(torch.zeros(1, 3, 32, 32))


def test_overrides_change_the_preset():
    model = build_model("i3d_r50", stage_temporal_strides=(1, 2, 1, 1), dropout=0.2)
    assert model.layer2[0].conv1.stride == (2, 1, 1) and model.dropout.p == 0.2


def test_cli_prints_params_shape_and_norms(capsys):
    assert cli_main(["tiny_r3d", "--norm", "gn", "--frames", "8", "--size", "64", "--norm-option", "num_groups=8"]) == 0
    out = capsys.readouterr().out
    assert "parameters:" in out and "output: (1, 400)" in out and "GroupNorm3d x12" in out


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("norm", ["gn", "bgn", "sub_bn"])
def test_cuda_channels_last_matches_cpu(norm):
    torch.manual_seed(0)
    opts = {"clips_per_group": 2} if norm == "sub_bn" else None
    model = build_model("tiny_r3d", num_classes=6, norm=norm, norm_options=opts, dropout=0.0, zero_init_residual=False)
    x = torch.randn(4, 3, 8, 48, 48)
    ref = model(x)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        gpu = model.cuda().to(memory_format=torch.channels_last_3d)
        out = gpu(x.cuda().to(memory_format=torch.channels_last_3d))
        out.sum().backward()
    torch.testing.assert_close(out.cpu(), ref.detach(), rtol=1e-3, atol=1e-4)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())
