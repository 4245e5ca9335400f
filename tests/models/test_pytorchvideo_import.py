"""pytorchvideo i3d_r50 / slow_r50 state dicts load into our presets and give the same outputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

hub = pytest.importorskip("pytorchvideo.models.hub.resnet")
from pytorchvideo.models.resnet import create_resnet  # noqa: E402

from gnvideo.models import build_model, convert_pytorchvideo_state_dict, load_pytorchvideo_checkpoint  # noqa: E402
from gnvideo.models.checkpoint_io import CheckpointError  # noqa: E402


def _randomize(net: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv3d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g))


# 8 x 64 x 64 input: res5 is 4x2x2 (i3d) / 8x2x2 (slow); pytorchvideo's head pool is set to cover it, which makes its
# pool -> fc -> global average equal to our global average -> fc.
# hub.slow_r50 fixes head_pool_kernel_size, so slow_r50 is built with create_resnet and hub.slow_r50's other options.
CASES = [
    ("i3d_r50", "i3d_r50_pytorchvideo", lambda: hub.i3d_r50(pretrained=False, head_pool_kernel_size=(4, 2, 2))),
    ("slow_r50", "slow_r50", lambda: create_resnet(
        stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(8, 2, 2), model_depth=50)),
]


@pytest.mark.parametrize(("pv_name", "preset", "make_pv"), CASES)
def test_import_gives_the_same_output(pv_name, preset, make_pv):
    torch.manual_seed(0)
    pv = make_pv()
    _randomize(pv)
    ours = build_model(preset, num_classes=400)
    result = load_pytorchvideo_checkpoint(ours, {"model_state": pv.state_dict()})
    assert not result.missing_keys and not result.unexpected_keys
    pv.eval().double()
    ours.eval().double()
    x = torch.randn(2, 3, 8, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = pv(x)
        got = ours(x)
    assert expected.shape == (2, 400) and expected.abs().max() > 1e-2
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-9)


def test_wrong_preset_and_bad_keys_are_errors(tmp_path):
    pv = hub.slow_r50(pretrained=False)
    pattern = r"'conv1\.weight' has shape \(64, 3, 1, 7, 7\).*i3d_r50_pytorchvideo or slow_r50"
    with pytest.raises(ValueError, match=pattern):
        load_pytorchvideo_checkpoint(build_model("i3d_r50_pytorchvideo"), pv.state_dict())
    with pytest.raises(ValueError, match=r"unexpected pytorchvideo key 'blocks\.9\.foo\.weight'"):
        convert_pytorchvideo_state_dict(dict(pv.state_dict(), **{"blocks.9.foo.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match="^state_dict: file .*missing.pyth does not exist"):
        load_pytorchvideo_checkpoint(build_model("slow_r50"), tmp_path / "missing.pyth")


def test_load_from_file(tmp_path):
    pv = hub.slow_r50(pretrained=False)
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": pv.state_dict()}, path)
    ours = build_model("slow_r50")
    load_pytorchvideo_checkpoint(ours, path)
    torch.testing.assert_close(ours.layer4[2].conv3.weight, pv.blocks[4].res_blocks[2].branch2.conv_c.weight)


def test_local_head_matches_pytorchvideo_beyond_the_training_crop():
    """res5 3x3 with a 2x2 head window (stands in for 8x8 with 7x7 at 256 px): pytorchvideo pools with stride 1,
    classifies each position and averages; the global head differs, the local head matches."""
    torch.manual_seed(0)
    pv = create_resnet(stem_conv_kernel_size=(1, 7, 7), head_pool_kernel_size=(8, 2, 2), model_depth=50)
    _randomize(pv)
    ours = build_model("slow_r50", head_pool="local", head_pool_size=(2, 2))
    load_pytorchvideo_checkpoint(ours, pv.state_dict())
    pv.eval()
    ours.eval()
    x = torch.randn(1, 3, 8, 96, 96)
    with torch.no_grad():
        want = pv(x)
        torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-4)
        ours.head_pool = "global"
        assert not torch.allclose(ours(x), want, rtol=1e-3, atol=1e-3)
