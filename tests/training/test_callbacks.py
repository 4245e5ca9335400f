"""PreciseBN: running statistics become the plain average of the batch statistics; batch-independent norms untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gnvideo.models import build_model, build_norm
from gnvideo.training.callbacks import PreciseBN, batch_norm_layers, update_bn_stats


def _batches(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, 2, 3, 3, generator=g) * (i + 1) + i for i in range(n)]


def test_bn_statistics_are_the_average_over_the_batches():
    bn = nn.BatchNorm3d(6, momentum=0.1)
    model = nn.Sequential(bn).eval()
    batches = _batches()
    assert update_bn_stats(model, batches) == 5
    means = torch.stack([b.mean(dim=(0, 2, 3, 4)) for b in batches])
    vars_ = torch.stack([b.transpose(0, 1).reshape(6, -1).var(dim=1) for b in batches])  # unbiased, as BN keeps
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, vars_.mean(0))
    assert bn.momentum == 0.1 and not model.training  # settings and mode restored


def test_sub_bn_and_bgn_are_updated_gn_is_not():
    for kind, opts in (("sub_bn", {"clips_per_group": 2}), ("bgn", {"num_groups": 3})):
        layer = build_norm(kind, 6, **opts)
        before = layer.running_mean.clone()
        assert update_bn_stats(nn.Sequential(layer), _batches()) == 5
        assert not torch.equal(layer.running_mean, before), kind
    gn = build_model("tiny_r3d", norm="gn")
    assert batch_norm_layers(gn) == [] and update_bn_stats(gn, _batches()) == 0
    frozen = build_model("tiny_r3d", norm="frozen_bn")
    assert batch_norm_layers(frozen) == []


def test_no_batches_leaves_the_statistics():
    bn = nn.BatchNorm3d(6)
    bn.running_mean.fill_(3.0)
    assert update_bn_stats(nn.Sequential(bn), []) == 0
    assert torch.all(bn.running_mean == 3.0)


def test_option_checks():
    assert PreciseBN(0).num_batches == 0
    try:
        PreciseBN(-1)
    except ValueError as e:
        assert "precise_bn.num_batches" in str(e)
    else:
        raise AssertionError("negative num_batches accepted")


def test_lr_monitor_without_a_logger_does_not_stop_training():
    import lightning.pytorch as pl

    from gnvideo.training.callbacks import LRMonitor

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.net(batch[0]).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer = pl.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[LRMonitor()])
    trainer.fit(Tiny(), data)
    assert trainer.global_step == 2


class _Strategy:
    def __init__(self, device: str) -> None:
        self.root_device = torch.device(device)
        self.barriers: list[str] = []

    def barrier(self, name: str) -> None:
        self.barriers.append(name)


class _Trainer:
    def __init__(self, device: str, local_rank: int = 0) -> None:
        self.strategy, self.local_rank = _Strategy(device), local_rank


@pytest.mark.parametrize("local_rank", [0, 1])
def test_kernel_setup_loads_the_extension_once_before_a_cuda_run(monkeypatch, local_rank):
    from gnvideo import ops
    from gnvideo.models import build_model
    from gnvideo.training.callbacks import GroupNormKernelSetup

    calls = []
    monkeypatch.setattr(ops, "load_extension", lambda: calls.append("load") or "cuda")
    model = build_model("tiny_r3d", num_classes=3, norm="gn", norm_options={"num_groups": 4})
    trainer = _Trainer("cuda", local_rank)
    GroupNormKernelSetup().setup(trainer, model, "fit")
    assert calls == ["load"] and trainer.strategy.barriers == ["gnvideo_ops_build"]  # rank 0 builds, others wait

    calls.clear()
    GroupNormKernelSetup().setup(_Trainer("cpu"), model, "fit")  # CPU runs never build
    bn = build_model("tiny_r3d", num_classes=3, norm="bn")
    GroupNormKernelSetup().setup(_Trainer("cuda"), bn, "fit")  # nor do models without GN layers
    assert calls == []


def test_kernel_setup_reports_a_failed_build_and_goes_on(monkeypatch, capsys):
    from gnvideo import ops
    from gnvideo.models import build_model
    from gnvideo.training.callbacks import GroupNormKernelSetup

    def fail():
        raise RuntimeError("nvcc not found")

    monkeypatch.setattr(ops, "load_extension", fail)
    model = build_model("tiny_r3d", num_classes=3, norm="gn", norm_options={"num_groups": 4})
    GroupNormKernelSetup().setup(_Trainer("cuda"), model, "fit")
    assert "GroupNorm CUDA kernel unavailable, using F.group_norm: nvcc not found" in capsys.readouterr().out
