"""gnvideo.models.weights: ImageNet sources by name (library API, local file, clear error), fine-tune loading."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from gnvideo.errors import ConfigError
from gnvideo.models import build_model
from gnvideo.models.checkpoint_io import CheckpointError
from gnvideo.models.weights import (
    IMAGENET_SOURCES,
    WeightsError,
    WeightsUnavailable,
    check_init_options,
    imagenet_state_dict,
    initialize,
    load_matching,
)


@pytest.fixture(scope="module")
def r50_bn_2d():
    """torchvision's ResNet-50 built by its own API with random weights (the path that downloads ImageNet)."""
    return imagenet_state_dict("torchvision_resnet50", pretrained=False)


@pytest.fixture(scope="module")
def r50_gn_2d():
    pytest.importorskip("timm")
    return imagenet_state_dict("timm_resnet50_gn", pretrained=False)


def _every_tensor_loaded(model, sd2d, tmp_path, name, norm, capsys):
    path = tmp_path / f"{name}.pth"
    torch.save(sd2d, path)
    initialize(model, norm, name, str(path))
    out = capsys.readouterr().out
    assert f"inflated {len(sd2d) - 2} tensors" in out, out  # all but the 1000-class fc
    assert "2 skipped: fc.weight, fc.bias" in out and "left as initialized" in out
    target = model.state_dict()
    for k, v in sd2d.items():
        k3 = ".".join("norm" + p[2:] if p.startswith("bn") and p[2:].isdigit() else p for p in k.split("."))
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        got = target[k3]
        want = v if got.dim() == v.dim() else v.unsqueeze(2).expand_as(got) / got.shape[2]  # "mean" inflation
        torch.testing.assert_close(got, want.to(got.dtype), msg=k)


def test_torchvision_resnet50_inflates_into_every_bn_i3d_tensor(r50_bn_2d, tmp_path, capsys):
    model = build_model("i3d_r50", num_classes=8, norm="bn")
    _every_tensor_loaded(model, r50_bn_2d, tmp_path, "torchvision_resnet50", "bn", capsys)


def test_timm_resnet50_gn_inflates_into_every_gn_i3d_tensor(r50_gn_2d, tmp_path, capsys):
    model = build_model("i3d_r50", num_classes=8, norm="gn")
    _every_tensor_loaded(model, r50_gn_2d, tmp_path, "timm_resnet50_gn", "gn", capsys)


def test_no_network_and_no_file_is_a_clear_error(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    model = build_model("tiny_r3d", num_classes=8, norm="bn")
    with pytest.raises(WeightsUnavailable, match=r"^pretrained_2d: ImageNet weights 'torchvision_resnet50' "
                                                 r"\(torchvision ResNet50_Weights.IMAGENET1K_V1\).*no network.*"
                                                 r"--model.pretrained_2d_file") as info:
        initialize(model, "bn", "torchvision_resnet50")
    assert isinstance(info.value, ConfigError) and info.value.key == "pretrained_2d"
    assert info.value.under("model.").key == "model.pretrained_2d"


def test_timm_offline_is_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"), raising=False)
    with pytest.raises(WeightsUnavailable, match=r"'timm_resnet50_gn' \(timm resnet50_gn.a1h_in1k\)"):
        imagenet_state_dict("timm_resnet50_gn")


def test_source_family_and_names_are_checked(tmp_path):
    model = build_model("tiny_r3d", num_classes=8, norm="gn")
    with pytest.raises(ConfigError, match=r"^pretrained_2d: torchvision_resnet50 holds BN weights.*timm_resnet50"):
        initialize(model, "gn", "torchvision_resnet50")
    with pytest.raises(ValueError, match=r"neither an ImageNet source"):
        initialize(model, "gn", "imagenet_please")
    with pytest.raises(ConfigError, match=r"^pretrained_2d_file: set pretrained_2d"):
        initialize(model, "gn", None, str(tmp_path / "x.pth"))
    with pytest.raises(ConfigError, match=r"^pretrained_2d_file: file .*missing.pth does not exist"):
        initialize(build_model("tiny_r3d", norm="bn"), "bn", "torchvision_resnet50", str(tmp_path / "missing.pth"))
    assert {s.family for s in IMAGENET_SOURCES.values()} == {"bn", "gn"}


def test_fine_tune_from_400_classes_loads_everything_but_the_head(tmp_path, capsys):
    src = build_model("tiny_r3d", num_classes=400, norm="gn", norm_options={"num_groups": 4})
    path = tmp_path / "k400.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    dst = build_model("tiny_r3d", num_classes=8, norm="gn", norm_options={"num_groups": 4})
    head = dst.fc.weight.detach().clone()
    report = load_matching(dst, str(path))
    out = capsys.readouterr().out
    assert set(report.skipped) == {"fc.weight", "fc.bias"} and set(report.missing) == {"fc.weight", "fc.bias"}
    assert "class count differs: checkpoint (400, 128), model (8, 128)" in out
    assert torch.equal(dst.fc.weight, head)  # the head keeps its fresh initialization
    for k, v in src.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(dst.state_dict()[k], v), k
    with pytest.raises(WeightsError, match=r"^init_from: no tensor matches"):
        load_matching(dst, {"foo.weight": torch.zeros(1)})
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"^init_from: .*bad.ckpt is neither a PyTorch checkpoint"):
        load_matching(dst, str(bad))


def test_fine_tune_from_a_pytorchvideo_checkpoint(tmp_path, capsys):
    hub = pytest.importorskip("pytorchvideo.models.hub.resnet")
    pv = hub.slow_r50(pretrained=False)  # 400 classes, pytorchvideo names
    path = tmp_path / "SLOW_8x8_R50.pyth"
    torch.save({"model_state": pv.state_dict()}, path)
    dst = build_model("slow_r50", num_classes=8, norm="bn")
    report = load_matching(dst, str(path))
    assert "[pytorchvideo]" in capsys.readouterr().out
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert len(report.loaded) == len(dst.state_dict()) - 2 - len(
        [k for k in dst.state_dict() if k.endswith("num_batches_tracked") and k not in report.loaded])


def test_torchvision_weight_api_reads_its_cache(r50_bn_2d, monkeypatch, tmp_path, capsys):
    """The named source goes through torchvision's own weight API: with the file in its cache, no network is used."""
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(r50_bn_2d, cache / "resnet50-0676ba61.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = build_model("i3d_r50", num_classes=8, norm="bn")
    initialize(model, "bn", "torchvision_resnet50")
    assert "inflated 318 tensors from torchvision_resnet50 (2 skipped" in capsys.readouterr().out
    torch.testing.assert_close(model.layer4[2].norm3.running_var, r50_bn_2d["layer4.2.bn3.running_var"])


def _as_2d(model) -> dict:
    """A 2D ResNet state dict in torchvision naming (``bnZ``, centre frame of each kernel) that fits ``model``."""
    out = {}
    for k, v in model.state_dict().items():
        k2 = ".".join("bn" + p[4:] if p.startswith("norm") and p[4:].isdigit() else p for p in k.split("."))
        out[k2] = v[:, :, v.shape[2] // 2] if v.ndim == 5 else v
    return out


def test_2d_weights_that_initialize_almost_nothing_are_an_error(tmp_path):
    """The issue's case: one unrelated tensor once printed 'inflated 0 tensors' and trained from random weights."""
    model = build_model("tiny_r3d", num_classes=8, norm="gn", norm_options={"num_groups": 4})
    one = tmp_path / "one.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, one)
    with pytest.raises(WeightsError, match=r"^pretrained_2d_file: timm_resnet50_gn \(file .*one.pth\): initializes 0 "
                                           r"of the model's 36 tensors outside the classifier \(first left out: "
                                           r"conv1.weight, norm1.weight, norm1.bias and 33 more\)") as info:
        initialize(model, "gn", "timm_resnet50_gn", str(one))
    assert info.value.key == "pretrained_2d_file" and "\n" not in str(info.value)
    with pytest.raises(WeightsError, match=r"^pretrained_2d: .*one.pth: initializes 0 of the model's 36"):
        initialize(model, "gn", str(one))  # a path in pretrained_2d: the same rule, its own key
    deeper = _as_2d(build_model("tiny_r3d", num_classes=8, norm="bn"))
    deeper["layer4.1.conv1.weight"] = torch.zeros(128, 128, 3, 3)  # a block the model does not have
    path = tmp_path / "deeper.pth"
    torch.save(deeper, path)
    bn_model = build_model("tiny_r3d", num_classes=8, norm="bn")
    with pytest.raises(WeightsError, match=r"^pretrained_2d: .*deeper.pth: 1 of its tensors outside the classifier "
                                           r"have no place in the model: layer4.1.conv1.weight; .*tensor for tensor"):
        initialize(bn_model, "bn", str(path))
    del deeper["layer4.1.conv1.weight"]
    torch.save(deeper, path)
    initialize(bn_model, "bn", str(path))  # every tensor has its place: loads


def test_init_from_must_load_the_whole_backbone(tmp_path):
    bn = build_model("tiny_r3d", num_classes=8, norm="bn")
    gn = build_model("tiny_r3d", num_classes=8, norm="gn", norm_options={"num_groups": 4})
    with pytest.raises(WeightsError, match=r"^init_from: initializes 36 of the model's 60 tensors outside the "
                                           r"classifier \(first left out: norm1.running_mean, norm1.running_var, "
                                           r"layer1.0.norm1.running_mean and 21 more\); fine-tuning loads every"):
        load_matching(bn, gn.state_dict())  # GN weights hold no BN statistics
    wider = build_model("r3d_10", num_classes=8, norm="bn").state_dict()
    with pytest.raises(WeightsError, match=r"have another shape in the model \(file vs model\): conv1.weight "
                                           r"64x3x3x7x7 vs 16x3x3x7x7, norm1.weight 64 vs 16"):
        load_matching(bn, wider)
    path = tmp_path / "no_res5.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in bn.state_dict().items() if not k.startswith("layer4.")}},
               path)
    with pytest.raises(WeightsError, match=r"^init_from: .*no_res5.ckpt: initializes 45 of the model's 60 tensors "
                                           r"outside the classifier \(first left out: layer4.0.conv1.weight"):
        initialize(bn, "bn", init_from=str(path))
    extra = dict(bn.state_dict(), **{"layer5.0.conv1.weight": torch.zeros(1)})
    assert load_matching(bn, extra, verbose=False).skipped == {"layer5.0.conv1.weight": "not in the model"}


def test_weights_files_that_would_run_code_are_refused_before_loading(code_running_checkpoint):
    path = str(code_running_checkpoint())
    model = build_model("tiny_r3d", num_classes=8, norm="bn")
    for kwargs, key in (({"init_from": path}, "init_from"), ({"pretrained_2d": path}, "pretrained_2d"),
                        ({"pretrained_2d": "torchvision_resnet50", "pretrained_2d_file": path},
                         "pretrained_2d_file")):
        with pytest.raises(CheckpointError, match=rf"^{key}: .*evil.ckpt is refused: its pickle names io.open"):
            check_init_options("bn", **kwargs)  # when the config is read
        with pytest.raises(CheckpointError, match=rf"^{key}: .*is refused"):
            initialize(model, "bn", **kwargs)
    assert not code_running_checkpoint.marker.exists()


def test_non_local_models_pass_the_backbone_rule(r50_gn_2d, tmp_path, capsys):
    """Fresh non-local blocks are not 'left out' tensors: ImageNet weights and a plain model's checkpoint both
    initialize a non-local model, whose blocks stay at their initialization."""
    nl = build_model("i3d_r50_nl5", num_classes=8, norm="gn")
    path = tmp_path / "gn2d.pth"
    torch.save(r50_gn_2d, path)
    initialize(nl, "gn", "timm_resnet50_gn", str(path))
    assert "5 non-local blocks at their initialization" in capsys.readouterr().out
    plain = build_model("tiny_r3d", num_classes=8, norm="bn")
    report = load_matching(build_model("tiny_r3d_nl", num_classes=8, norm="bn"), plain.state_dict(), verbose=False)
    assert report.fresh_nonlocal and not report.missing
