"""Normalization layers for video tensors (N, C, T, H, W) that torch does not provide.

- ``FrozenBatchNorm3d``: fixed per-channel statistics and affine, stored as buffers (fine-tuning).
- ``SubBatchNorm3d``: BatchNorm whose training statistics are taken over sub-batches of ``clips_per_group``
  consecutive clips, so one device holding 16 clips reproduces the statistics of 4-clips-per-GPU BN.
- ``GroupNorm3d`` (and ``LayerNorm3d``, ``InstanceNorm3d``): GroupNorm through ``gnvideo.ops.group_norm`` with an
  optional fused activation.
- ``BatchGroupNorm3d``: Batch Group Normalization (Zhou et al., 2020), statistics per channel group over the batch.

Every layer accepts the channel count as its first positional argument or as ``num_features=`` (the keyword that
pytorchvideo's builders use). Option validation with user-facing messages lives in ``gnvideo.models.norms``.
"""

from __future__ import annotations

import torch
from torch import nn

from gnvideo import ops


def _channels(num_channels: int | None, num_features: int | None, layer: str) -> int:
    if num_channels is None and num_features is None:
        raise ValueError(f"{layer}: give the channel count as num_channels or num_features")
    if num_channels is not None and num_features is not None and num_channels != num_features:
        raise ValueError(f"{layer}: num_channels={num_channels} and num_features={num_features} disagree")
    channels = num_channels if num_channels is not None else num_features
    if int(channels) < 1:
        raise ValueError(f"{layer}: channel count must be >= 1, got {channels}")
    return int(channels)


def _stat_shape(x: torch.Tensor) -> list[int]:
    """Shape that broadcasts a (C,) vector over x of shape (N, C, *spatial)."""
    return [1, -1] + [1] * (x.dim() - 2)


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm with fixed statistics and affine (all buffers); behaves as in eval mode even in train mode.

    Args:
        num_channels: C.
        eps: added to the running variance.
        num_features: alias of ``num_channels``.

    Shape: (N, C, *spatial) -> same.
    """

    def __init__(self, num_channels: int | None = None, eps: float = 1e-5, *, num_features: int | None = None):
        super().__init__()
        c = _channels(num_channels, num_features, "frozen_bn")
        self.num_features = c
        self.eps = float(eps)
        self.register_buffer("weight", torch.ones(c))
        self.register_buffer("bias", torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # BatchNorm checkpoints carry a step counter that has no meaning here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        shape = _stat_shape(x)
        return x * scale.to(x.dtype).view(shape) + shift.to(x.dtype).view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class SubBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm with training statistics over groups of ``clips_per_group`` consecutive clips.

    In training, the batch (N, C, T, H, W) is split into N / k groups of k = ``clips_per_group`` clips; each group is
    normalized with its own mean and (biased) variance over (k, T, H, W), exactly as a BN layer on a device that holds
    k clips. The running statistics move like BN's, with the batch statistic replaced by the average over the groups
    of each group's mean and unbiased variance (the average of what the per-device BN copies would hold).
    Evaluation uses the running statistics, as BN does.

    Args:
        num_channels: C.
        clips_per_group: k, the clips per simulated device; N must be a multiple of k in training.
        eps: added to the variance.
        momentum: running-statistics momentum (as in BN).
        num_features: alias of ``num_channels``.
    """

    def __init__(
        self,
        num_channels: int | None = None,
        clips_per_group: int = 1,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        num_features: int | None = None,
    ):
        c = _channels(num_channels, num_features, "sub_bn")
        super().__init__(c, eps=eps, momentum=momentum)
        if int(clips_per_group) < 1:
            raise ValueError(f"sub_bn (channels={c}): clips_per_group must be >= 1, got {clips_per_group}")
        self.clips_per_group = int(clips_per_group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n, k = x.shape[0], self.clips_per_group
        if n % k != 0:
            raise ValueError(
                f"sub_bn (channels={self.num_features}): batch size N={n} is not divisible by clips_per_group={k}"
            )
        groups = n // k
        fused = x.dtype == self.running_mean.dtype and (not self.affine or x.dtype == self.weight.dtype)
        if fused and x[:k].numel() > self.num_features:  # F.batch_norm refuses one value per channel
            return self._grouped_batch_norm(x, groups)
        xs = x.unflatten(0, (groups, k))  # (G, k, C, *spatial); a view in any memory format
        dims = [1] + list(range(3, xs.dim()))
        xf = xs.float() if xs.dtype in (torch.float16, torch.bfloat16) else xs
        var, mean = torch.var_mean(xf, dim=dims, correction=0, keepdim=True)  # (G, 1, C, 1, ...)
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype)
        shape = [1, 1, -1] + [1] * (xs.dim() - 3)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            count = xs.numel() // (groups * self.num_features)
            self._update_running(mean.detach().reshape(groups, -1),
                                 var.detach().reshape(groups, -1) * (count / max(count - 1, 1)))
        return y.flatten(0, 1)

    def _grouped_batch_norm(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        """The training forward as one fused ``F.batch_norm`` over (k, G x C, *spatial): channel c of group g is
        channel g x C + c there, so each group is normalized over its own (k, *spatial) values. Faster than the
        elementwise formula (which stays for fp16/bf16 input, whose statistics it takes in fp32); figures in README.
        """
        k, c, spatial = self.clips_per_group, self.num_features, x.shape[2:]
        xs = x.reshape(groups, k, c, *spatial).transpose(0, 1).reshape(k, groups * c, *spatial)  # a copy when G > 1
        stats = (None, None)
        if self.track_running_stats:  # momentum 1: the kernel leaves each group's mean and unbiased variance here
            stats = (torch.zeros(groups * c, dtype=x.dtype, device=x.device),
                     torch.ones(groups * c, dtype=x.dtype, device=x.device))
        weight = self.weight.repeat(groups) if self.affine else None
        bias = self.bias.repeat(groups) if self.affine else None
        y = nn.functional.batch_norm(xs, *stats, weight, bias, True, 1.0, self.eps)
        if self.track_running_stats:
            self._update_running(stats[0].view(groups, c), stats[1].view(groups, c))
        return y.reshape(k, groups, c, *spatial).transpose(0, 1).reshape(x.shape)

    @torch.no_grad()
    def _update_running(self, group_mean: torch.Tensor, group_var: torch.Tensor) -> None:
        """Move the running statistics towards the average over groups of (G, C) means and unbiased variances."""
        self.num_batches_tracked.add_(1)
        m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - m).add_(group_mean.mean(dim=0).to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(group_var.mean(dim=0).to(self.running_var.dtype), alpha=m)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", clips_per_group={self.clips_per_group}"


class GroupNorm3d(nn.Module):
    """GroupNorm over (N, C, *spatial) via ``gnvideo.ops.group_norm``, with an optional fused activation.

    Args:
        num_channels: C.
        num_groups: G; C must be divisible by G.
        eps: added to the variance.
        activation: "none" | "relu" | "silu", applied after the affine inside the op.
        use_kernel: False forces the reference path (F.group_norm + activation).
        affine: learnable per-channel weight (init 1) and bias (init 0).
        num_features: alias of ``num_channels``.
    """

    def __init__(
        self,
        num_channels: int | None = None,
        num_groups: int = 32,
        eps: float = 1e-5,
        activation: str = "none",
        use_kernel: bool = True,
        affine: bool = True,
        *,
        num_features: int | None = None,
    ):
        super().__init__()
        c = _channels(num_channels, num_features, type(self).__name__)
        if num_groups < 1 or c % num_groups != 0:
            raise ValueError(f"{type(self).__name__}: num_channels={c} is not divisible by num_groups={num_groups}")
        if activation not in ops.ACTIVATIONS:
            raise ValueError(f"{type(self).__name__}: activation must be one of {ops.ACTIVATIONS}, got {activation!r}")
        self.num_channels = c
        self.num_groups = int(num_groups)
        self.eps = float(eps)
        self.activation = activation
        self.use_kernel = bool(use_kernel)
        self.affine = bool(affine)
        if affine:
            self.weight = nn.Parameter(torch.ones(c))
            self.bias = nn.Parameter(torch.zeros(c))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    @property
    def num_features(self) -> int:
        return self.num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps, self.activation, self.use_kernel)

    def extra_repr(self) -> str:
        return (
            f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, activation={self.activation!r}, "
            f"use_kernel={self.use_kernel}"
        )


class LayerNorm3d(GroupNorm3d):
    """GroupNorm with one group: statistics over (C, T, H, W) per sample."""

    def __init__(self, num_channels: int | None = None, eps: float = 1e-5, activation: str = "none",
                 use_kernel: bool = True, affine: bool = True, *, num_features: int | None = None):
        super().__init__(num_channels, 1, eps, activation, use_kernel, affine, num_features=num_features)


class InstanceNorm3d(GroupNorm3d):
    """GroupNorm with one channel per group: statistics over (T, H, W) per sample and channel."""

    def __init__(self, num_channels: int | None = None, eps: float = 1e-5, activation: str = "none",
                 use_kernel: bool = True, affine: bool = True, *, num_features: int | None = None):
        c = _channels(num_channels, num_features, "InstanceNorm3d")
        super().__init__(c, c, eps, activation, use_kernel, affine)


class BatchGroupNorm3d(nn.Module):
    """Batch Group Normalization (Zhou et al., 2020): BN statistics taken per channel group.

    The input (N, C, T, H, W) is viewed as (N, G, C/G * T * H * W); in training, each group g is normalized with the
    mean and biased variance over the batch and the group's features (N * C/G * T * H * W values). Running mean and
    unbiased variance per group, shape (G,), move with ``momentum`` and are used in eval mode. The affine is per
    channel.

    Args:
        num_channels: C.
        num_groups: G; C must be divisible by G.
        eps: added to the variance.
        momentum: running-statistics momentum in [0, 1].
        num_features: alias of ``num_channels``.
    """

    def __init__(
        self,
        num_channels: int | None = None,
        num_groups: int = 32,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        num_features: int | None = None,
    ):
        super().__init__()
        c = _channels(num_channels, num_features, "BatchGroupNorm3d")
        if num_groups < 1 or c % num_groups != 0:
            raise ValueError(f"BatchGroupNorm3d: num_channels={c} is not divisible by num_groups={num_groups}")
        self.num_channels = c
        self.num_groups = int(num_groups)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("running_mean", torch.zeros(num_groups))
        self.register_buffer("running_var", torch.ones(num_groups))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    @property
    def num_features(self) -> int:
        return self.num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"BatchGroupNorm3d: expected (N, {self.num_channels}, ...), got {tuple(x.shape)}")
        g = self.num_groups
        xg = x.unflatten(1, (g, self.num_channels // g))  # (N, G, C/G, *spatial)
        dims = [0] + list(range(2, xg.dim()))
        xf = xg.float() if xg.dtype in (torch.float16, torch.bfloat16) else xg
        if self.training:
            var, mean = torch.var_mean(xf, dim=dims, correction=0, keepdim=True)
            with torch.no_grad():
                count = xg.numel() // g
                unbiased = var.detach().reshape(-1) * (count / max(count - 1, 1))
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach().reshape(-1).to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
                self.num_batches_tracked.add_(1)
        else:
            shape = [1, g] + [1] * (xg.dim() - 2)
            mean = self.running_mean.view(shape).to(xf.dtype)
            var = self.running_var.view(shape).to(xf.dtype)
        y = ((xf - mean) * torch.rsqrt(var + self.eps)).to(x.dtype).flatten(1, 2)
        shape = _stat_shape(y)
        return y * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, num_groups={self.num_groups}, eps={self.eps}, momentum={self.momentum}"


__all__ = [
    "BatchGroupNorm3d",
    "FrozenBatchNorm3d",
    "GroupNorm3d",
    "InstanceNorm3d",
    "LayerNorm3d",
    "SubBatchNorm3d",
]
