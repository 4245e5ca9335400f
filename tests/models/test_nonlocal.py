"""Non-local blocks: equal to pytorchvideo's NonLocal, efficient = explicit, identity at init with every norm,
placement and parameter count of the presets, weight loading that leaves fresh blocks alone."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnvideo.models import build_model
from gnvideo.models.__main__ import main as cli_main
from gnvideo.models.inflate import inflate_2d_state_dict
from gnvideo.models.nonlocal_block import NonLocal3d, fresh_nonlocal_blocks
from gnvideo.models.norms import NORM_KINDS
from gnvideo.models.weights import imagenet_state_dict, load_matching

INSTANTIATIONS = {"embedded_gaussian": "softmax", "dot_product": "dot_product"}  # ours -> pytorchvideo's name


def _randomize(block: NonLocal3d, seed: int = 0) -> NonLocal3d:
    """Non-trivial weights and BN statistics (a fresh block is the identity, which would prove nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in block.state_dict().items():
            if t.is_floating_point():
                value = torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("running_var") else \
                    torch.randn(t.shape, generator=gen) * (0.05 if "conv" in name else 0.5)
                t.copy_(value)
    return block


def _nonlocal_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, NonLocal3d)]


@pytest.mark.parametrize("implementation", ["efficient", "explicit"])
@pytest.mark.parametrize("instantiation", sorted(INSTANTIATIONS))
def test_block_equals_pytorchvideo_nonlocal(instantiation, implementation):
    """Same weights, BN in eval mode: our block's output and input gradient are pytorchvideo's, in float32."""
    nonlocal_net = pytest.importorskip("pytorchvideo.layers.nonlocal_net")
    torch.manual_seed(0)
    ours = _randomize(NonLocal3d(64, instantiation=instantiation, implementation=implementation)).eval()
    theirs = nonlocal_net.create_nonlocal(dim_in=64, dim_inner=32, pool_size=(1, 2, 2),
                                          instantiation=INSTANTIATIONS[instantiation], norm=nn.BatchNorm3d).eval()
    theirs.load_state_dict(ours.state_dict())  # same names, strict
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 64, 4, 14, 14)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ours, out_theirs = ours(x_ours), theirs(x_theirs)
    torch.testing.assert_close(out_ours, out_theirs)  # float32 tolerances: rtol 1.3e-6, atol 1e-5
    assert not torch.allclose(out_ours, x, atol=1e-2)  # the block does something
    weights = torch.randn_like(out_ours)
    (out_ours * weights).sum().backward()
    (out_theirs * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad)
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):  # sums over every position: looser
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("instantiation", sorted(INSTANTIATIONS))
def test_efficient_form_equals_the_explicit_one(instantiation, channels_last):
    """scaled_dot_product_attention (embedded Gaussian) and theta (phi g^T) / S (dot product) against the affinity
    matrix, forward and backward, in float64; the output keeps the input's memory format."""
    torch.manual_seed(0)
    explicit = _randomize(NonLocal3d(32, instantiation=instantiation, implementation="explicit")).double()
    efficient = NonLocal3d(32, instantiation=instantiation, implementation="efficient").double()
    efficient.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 32, 4, 8, 6, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    outs, grads = [], []
    for block in (explicit, efficient):
        xi = x.clone().requires_grad_()
        out = block(xi)
        (out * torch.arange(out.numel(), dtype=out.dtype).reshape(out.shape).sin()).sum().backward()
        outs.append(out)
        grads.append([xi.grad, *(p.grad for p in block.parameters())])
    torch.testing.assert_close(outs[1], outs[0])
    for g_eff, g_ref in zip(grads[1], grads[0]):
        torch.testing.assert_close(g_eff, g_ref)
    assert outs[1].is_contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_embedded_gaussian_reaches_a_fused_attention_kernel(channels_last):
    """Not the math fallback, which forms the matrix: q, k, v must have unit stride along the channels."""
    from torch.profiler import ProfilerActivity, profile

    block = NonLocal3d(32)
    x = torch.randn(2, 32, 2, 8, 8, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last_3d).requires_grad_()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        block(x)
    ops = [e.name for e in prof.events() if e.name.startswith("aten::_scaled_dot_product")]
    assert ops and "math" not in ops[0], ops


def test_initialization_is_the_nonlocal_codes():
    torch.manual_seed(0)
    block = NonLocal3d(512)
    for conv in (block.conv_theta, block.conv_phi, block.conv_g, block.conv_out):
        assert conv.bias is not None and float(conv.bias.detach().abs().sum()) == 0.0
        assert abs(float(conv.weight.detach().std()) - 0.01) < 5e-4 and abs(float(conv.weight.detach().mean())) < 5e-4
    assert float(block.norm.weight.detach().abs().sum()) == float(block.norm.bias.detach().abs().sum()) == 0
    assert block.inner_channels == 256 and block.pool_size == (1, 2, 2)
    assert isinstance(NonLocal3d(8, pool=(1, 1, 1)).pool, nn.Identity) and NonLocal3d(8, pool=None).pool_size is None


@pytest.mark.parametrize("norm", NORM_KINDS)
def test_a_fresh_block_is_the_identity_with_every_norm(norm):
    opts = {"clips_per_group": 2} if norm == "sub_bn" else {}
    if norm in ("gn", "bgn"):
        opts["num_groups"] = 4
    block = NonLocal3d(16, norm=norm, norm_options=opts)
    assert float(block.norm.weight.detach().abs().sum()) == 0.0
    x = torch.randn(4, 16, 2, 6, 6)
    for mode in (block.train(), block.eval()):
        assert torch.equal(mode(x), x), mode.training


def test_block_errors():
    with pytest.raises(ValueError, match=r"instantiation must be one of .*'gaussian'"):
        NonLocal3d(8, instantiation="gaussian")
    with pytest.raises(ValueError, match=r"implementation must be one of"):
        NonLocal3d(8, implementation="fast")
    with pytest.raises(ValueError, match=r"pool must be None or 3 ints"):
        NonLocal3d(8, pool=(2, 2))
    with pytest.raises(ValueError, match=r"nonlocal_blocks for res3 must be distinct block indices in \[0, 4\)"):
        build_model("i3d_r50", nonlocal_blocks=((), (4,), (), ()))
    with pytest.raises(ValueError, match=r"nonlocal_blocks has 2 entries"):
        build_model("i3d_r50", nonlocal_blocks=((), (1,)))


def test_presets_place_the_blocks_and_count_the_parameters():
    """5 blocks after blocks 1, 3 of res3 and 1, 3, 5 of res4; 10 after every block of both; the issue's count."""
    counts = {}
    for name in ("i3d_r50", "i3d_r50_nl5", "i3d_r50_nl10", "i3d_r50_nl5_dot"):
        model = build_model(name, num_classes=400)
        counts[name] = sum(p.numel() for p in model.parameters())
        blocks = dict((n, m) for n, m in model.named_modules() if isinstance(m, NonLocal3d))
        if name == "i3d_r50_nl10":
            assert list(blocks) == [f"layer2.nonlocal{j}" for j in range(4)] + [f"layer3.nonlocal{j}" for j in range(6)]
        elif name != "i3d_r50":
            assert list(blocks) == ["layer2.nonlocal1", "layer2.nonlocal3", "layer3.nonlocal1", "layer3.nonlocal3",
                                    "layer3.nonlocal5"]
            assert [m.channels for m in blocks.values()] == [512, 512, 1024, 1024, 1024]
        want = "dot_product" if name.endswith("_dot") else "embedded_gaussian"
        assert all(m.instantiation == want and m.pool_size == (1, 2, 2) for m in blocks.values())
    assert counts["i3d_r50"] == 28_043_472
    assert counts["i3d_r50_nl5"] == counts["i3d_r50_nl5_dot"] == 35_401_936 == 28_043_472 + 7_358_464
    # a block of C channels: 3 convs C -> C/2 and one C/2 -> C, all with bias, and the norm's scale and shift
    per_block = {c: 4 * c * (c // 2) + 3 * (c // 2) + c + 2 * c for c in (512, 1024)}
    assert counts["i3d_r50_nl5"] - counts["i3d_r50"] == 2 * per_block[512] + 3 * per_block[1024]
    assert counts["i3d_r50_nl10"] - counts["i3d_r50"] == 4 * per_block[512] + 6 * per_block[1024] == 14_716_928


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_at_init_an_nl_model_computes_the_plain_model(norm, tmp_path, capsys):
    """With the plain model's weights the logits (eval) and res5 features (train mode) are equal, bit for bit;
    init_from a plain checkpoint loads everything and says in one line that the blocks start fresh."""
    torch.manual_seed(0)
    plain = build_model("i3d_r50", num_classes=10, norm=norm)
    nl = build_model("i3d_r50_nl5", num_classes=10, norm=norm)
    missing, unexpected = nl.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and missing and all(".nonlocal" in k for k in missing)
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        assert torch.equal(nl.eval()(x), plain.eval()(x))
        assert torch.equal(nl.train().forward_features(x), plain.train().forward_features(x))

    torch.manual_seed(1)
    trained = build_model("i3d_r50", num_classes=10, norm=norm)  # other weights, standing in for a trained model
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in trained.state_dict().items()}}, path)
    report = load_matching(nl, str(path))
    out = capsys.readouterr().out
    assert report.skipped == {} and report.missing == []
    assert report.fresh_nonlocal == _nonlocal_names(nl)
    assert [line for line in out.splitlines() if "non-local" in line] == [
        "  5 non-local blocks not in the checkpoint start at their initialization (the identity): layer2.nonlocal1, "
        "layer2.nonlocal3, layer3.nonlocal1, layer3.nonlocal3, layer3.nonlocal5"]
    assert len(out.splitlines()) == 2
    with torch.no_grad():
        assert torch.equal(nl.eval()(x), trained.eval()(x))


def test_an_nl_checkpoint_loads_its_blocks(tmp_path, capsys):
    src = _randomize_all(build_model("tiny_r3d_nl", num_classes=4))
    path = tmp_path / "nl.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = build_model("tiny_r3d_nl", num_classes=4)
    report = load_matching(dst, str(path))
    assert report.fresh_nonlocal == [] and report.missing == [] and "non-local" not in capsys.readouterr().out
    assert torch.equal(dst.layer2.nonlocal0.norm.weight, src.layer2.nonlocal0.norm.weight)
    # a block with some tensors loaded is not "fresh": what is missing of it is listed tensor by tensor
    blocks, rest = fresh_nonlocal_blocks(dst, ["layer2.nonlocal0.conv_g.weight", "layer3.nonlocal0.norm.bias"])
    assert blocks == [] and rest == ["layer2.nonlocal0.conv_g.weight", "layer3.nonlocal0.norm.bias"]


def _randomize_all(model: nn.Module) -> nn.Module:
    for block in model.modules():
        if isinstance(block, NonLocal3d):
            _randomize(block)
    return model


def test_imagenet_inflation_leaves_the_blocks_at_init(capsys):
    """Inflating torchvision's ResNet-50 fills the backbone as for i3d_r50; the blocks are reported apart."""
    sd2d = imagenet_state_dict("torchvision_resnet50", pretrained=False)
    plain = inflate_2d_state_dict(build_model("i3d_r50", num_classes=400), sd2d)
    torch.manual_seed(0)
    nl = build_model("i3d_r50_nl5", num_classes=400)
    fresh = {k: v.clone() for k, v in nl.state_dict().items() if ".nonlocal" in k}
    report = inflate_2d_state_dict(nl, sd2d, verbose=True)
    assert report.missing == plain.missing and report.skipped == plain.skipped and report.loaded == plain.loaded
    assert report.fresh_nonlocal == _nonlocal_names(nl)
    assert "5 non-local blocks at their initialization" in capsys.readouterr().out
    for k, v in nl.state_dict().items():
        if k in fresh:
            assert torch.equal(v, fresh[k]), k


def test_cli_names_the_blocks(capsys):
    assert cli_main(["tiny_r3d_nl", "--frames", "8", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "non-local blocks: 2 (embedded_gaussian, pool (1, 2, 2);" in out
    assert out.rstrip().endswith("layer2.nonlocal0, layer3.nonlocal0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("instantiation", sorted(INSTANTIATIONS))
def test_cuda_efficient_form_equals_the_explicit_one(instantiation, dtype):
    """At the res3 shape of a 32x2 clip (4 x 28 x 28), on the GPU's attention kernels: the block's branch (output
    minus input) and every weight gradient, by relative error (bf16 autocast: the recipe's precision)."""
    torch.manual_seed(0)
    explicit = _randomize(NonLocal3d(512, instantiation=instantiation, implementation="explicit")).cuda()
    efficient = NonLocal3d(512, instantiation=instantiation).cuda()
    efficient.load_state_dict(explicit.state_dict())
    x = torch.randn(2, 512, 4, 28, 28, device="cuda")
    dy = torch.randn_like(x)
    branches, grads = [], []
    for block in (explicit, efficient):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = block(x)
        out.float().backward(dy)
        branches.append(out.float() - x)
        grads.append([p.grad.float() for p in block.parameters()])
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-4
    assert float((branches[1] - branches[0]).norm()) < tol * float(branches[0].norm())
    # a floor for gradients that are 0 in exact arithmetic (softmax ignores conv_phi's bias): rounding noise only
    floor = 1e-3 * float(torch.cat([g.flatten() for g in grads[0]]).norm())
    for (name, _), g_eff, g_ref in zip(explicit.named_parameters(), grads[1], grads[0]):
        assert float((g_eff - g_ref).norm()) < tol * max(float(g_ref.norm()), floor), name
