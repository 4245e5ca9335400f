"""Residual blocks of the 3D ResNet (input and output (N, C, T, H, W)).

Module names follow torchvision's ResNet (``conv1``/``norm1``/.../``downsample.0``/``downsample.1``) so 2D
checkpoints map onto them by renaming ``bnK`` to ``normK``. A ReLU that follows a GN-family norm is fused into it
(``actK`` is then ``nn.Identity``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gnvideo.models.norms import build_norm, build_norm_act


def _downsample(in_ch: int, out_ch: int, stride: tuple[int, int, int], norm: str, opts: dict[str, Any]):
    if in_ch == out_ch and stride == (1, 1, 1):
        return None
    return nn.Sequential(
        nn.Conv3d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False),
        build_norm(norm, out_ch, **opts),
    )


class BasicBlock3d(nn.Module):
    """Two (kt, 3, 3) convolutions with a residual connection.

    Args:
        in_channels: C_in.
        width: C_out (expansion 1).
        stride: spatial stride of the first conv (and the shortcut).
        temporal_stride: temporal stride of the first conv (and the shortcut).
        temporal_kernel: kt of both convs (padding kt // 2).
        norm: norm kind; ``norm_options`` are passed to every norm.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        temporal_stride: int = 1,
        temporal_kernel: int = 3,
        norm: str = "bn",
        norm_options: dict[str, Any] | None = None,
        temporal_position: str = "a",
    ):
        super().__init__()
        opts = dict(norm_options or {})
        kt, s3 = temporal_kernel, (temporal_stride, stride, stride)
        out = width * self.expansion
        self.conv1 = nn.Conv3d(in_channels, width, (kt, 3, 3), stride=s3, padding=(kt // 2, 1, 1), bias=False)
        self.norm1, self.act1 = build_norm_act(norm, width, True, **opts)
        self.conv2 = nn.Conv3d(width, out, (kt, 3, 3), padding=(kt // 2, 1, 1), bias=False)
        self.norm2, _ = build_norm_act(norm, out, False, **opts)
        self.downsample = _downsample(in_channels, out, s3, norm, opts)
        self.act_out = nn.ReLU(inplace=True)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.act_out(out + identity)


class Bottleneck3d(nn.Module):
    """1x1x1 -> 3x3 -> 1x1x1 bottleneck (expansion 4) with a temporal kernel on the first or the middle conv.

    Args:
        in_channels: C_in.
        width: inner channels; output is 4 * width.
        stride: spatial stride, on the middle conv (ResNet v1.5, as torchvision and pytorchvideo).
        temporal_stride: temporal stride, on the first conv (as pytorchvideo's ``conv_a``).
        temporal_kernel: kt; the first conv is (kt, 1, 1) when ``temporal_position="a"`` (I3D, Slow), the middle
            conv is (kt, 3, 3) when ``temporal_position="b"`` (R3D-50). Padding kt // 2.
        norm: norm kind; ``norm_options`` are passed to every norm.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        width: int,
        stride: int = 1,
        temporal_stride: int = 1,
        temporal_kernel: int = 1,
        norm: str = "bn",
        norm_options: dict[str, Any] | None = None,
        temporal_position: str = "a",
    ):
        super().__init__()
        if temporal_position not in ("a", "b"):
            raise ValueError(f"temporal_position must be 'a' or 'b', got {temporal_position!r}")
        opts = dict(norm_options or {})
        out = width * self.expansion
        ka = temporal_kernel if temporal_position == "a" else 1
        kb = temporal_kernel if temporal_position == "b" else 1
        self.conv1 = nn.Conv3d(
            in_channels, width, (ka, 1, 1), stride=(temporal_stride, 1, 1), padding=(ka // 2, 0, 0), bias=False
        )
        self.norm1, self.act1 = build_norm_act(norm, width, True, **opts)
        self.conv2 = nn.Conv3d(
            width, width, (kb, 3, 3), stride=(1, stride, stride), padding=(kb // 2, 1, 1), bias=False
        )
        self.norm2, self.act2 = build_norm_act(norm, width, True, **opts)
        self.conv3 = nn.Conv3d(width, out, kernel_size=1, bias=False)
        self.norm3, _ = build_norm_act(norm, out, False, **opts)
        self.downsample = _downsample(in_channels, out, (temporal_stride, stride, stride), norm, opts)
        self.act_out = nn.ReLU(inplace=True)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.act2(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        return self.act_out(out + identity)


BLOCKS = {"basic": BasicBlock3d, "bottleneck": Bottleneck3d}
