"""One configurable 3D ResNet: stem, four residual stages, pooling head.

Layout (module names)::

    conv1 -> norm1 -> act1 -> pool1 -> layer1 [-> pool2] -> layer2 -> layer3 -> layer4 -> avgpool -> dropout -> fc

A stage ``layerX`` is an ``nn.Sequential`` of residual blocks ``layerX.0``, ``layerX.1``, ...; with
``nonlocal_blocks`` a non-local block (``gnvideo.models.nonlocal_block``) follows residual block ``j`` as
``layerX.nonlocalJ`` (PySlowFast's ``NONLOCAL.LOCATION``). The residual blocks keep their names, so weights of the
model without non-local blocks (ImageNet inflation, ``init_from``) load by name and the non-local blocks keep their
initialization, under which they are the identity.

Heads (``head_pool``): "global" averages the res5 map (N, C, T', H', W') to (N, C) and classifies it. "local" is the
pytorchvideo / Non-local head: average-pool with kernel (T', 7, 7) (``head_pool_size``, capped at the map) and
stride 1, classify each position, and average the logits over the positions. At the training crop (224 px: res5 7x7)
both give the same result; at larger test crops (256 px: 8x8, or the full frame) "local" matches pytorchvideo's
models, whose weights were trained and tested that way.

Input (N, C_in, T, H, W) float (contiguous or ``torch.channels_last_3d``) -> logits (N, num_classes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gnvideo.errors import ConfigError
from gnvideo.models.blocks import BLOCKS
from gnvideo.models.nonlocal_block import NonLocal3d
from gnvideo.models.norms import NORM_KINDS, build_norm_act


def _triple(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        return (value, value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 3:
        raise ValueError(f"{name} must be an int or 3 ints (T, H, W), got {value}")
    return value


def _per_block(kernels: int | Sequence[int], depth: int, stage: int) -> list[int]:
    if isinstance(kernels, int):
        return [kernels] * depth
    kernels = [int(k) for k in kernels]
    if len(kernels) != depth:
        raise ValueError(
            f"temporal_kernels for res{stage + 2} has {len(kernels)} entries, the stage has {depth} blocks"
        )
    return kernels


def _nonlocal_positions(nonlocal_blocks: Sequence[Sequence[int]] | None, layers: Sequence[int]) -> list[set[int]]:
    if nonlocal_blocks is None:
        return [set() for _ in layers]
    if len(nonlocal_blocks) != len(layers):
        raise ValueError(f"nonlocal_blocks has {len(nonlocal_blocks)} entries, layers has {len(layers)} stages")
    positions = []
    for stage, (blocks, depth) in enumerate(zip(nonlocal_blocks, layers)):
        chosen = [int(j) for j in blocks]
        if any(j < 0 or j >= depth for j in chosen) or len(set(chosen)) != len(chosen):
            raise ValueError(f"nonlocal_blocks for res{stage + 2} must be distinct block indices in [0, {depth}), "
                             f"got {list(blocks)}")
        positions.append(set(chosen))
    return positions


class ResNet3d(nn.Module):
    """3D ResNet with per-block temporal kernel sizes.

    Args:
        block: "bottleneck" or "basic".
        layers: blocks per stage (res2..res5).
        widths: inner width per stage (bottleneck output is 4x).
        temporal_kernels: per stage, an int for every block or one int per block (kt of the temporal conv).
        temporal_position: bottleneck only: "a" = (kt,1,1) first conv, "b" = (kt,3,3) middle conv.
        stage_temporal_strides: temporal stride of the first block of each stage.
        stage_spatial_strides: spatial stride of the first block of each stage.
        stem_width: channels of conv1.
        stem_kernel: conv1 kernel (T, H, W); padding is kernel // 2.
        stem_stride: conv1 stride (T, H, W).
        pool1_kernel: first max-pool kernel (T, H, W), or None for no pool; padding ((k-1)//2) per dim.
        pool1_stride: first max-pool stride.
        pool_after_res2: a (2, 1, 1) max-pool with stride (2, 1, 1) after res2.
        in_channels: input channels.
        num_classes: logits.
        norm: norm kind (``NORM_KINDS``); every norm is built from it and ``norm_options``.
        norm_options: options for ``build_norm`` (e.g. ``{"num_groups": 32}``).
        dropout: dropout probability before fc.
        zero_init_residual: the last norm of every residual block starts with weight 0.
        head_pool: "global" or "local" (module docstring).
        head_pool_size: (H, W) of the "local" head's pooling window, in res5 positions.
        nonlocal_blocks: per stage, the 0-based indices of the residual blocks that a non-local block follows
            (None: none); e.g. ``((), (1, 3), (1, 3, 5), ())``, the Non-local paper's 5 blocks.
        nonlocal_instantiation: "embedded_gaussian" or "dot_product" (``NonLocal3d``).
        nonlocal_pool: max-pool (T, H, W) before phi and g in each non-local block, None for none.
        nonlocal_implementation: "efficient" (scaled dot-product attention) or "explicit" (affinity matrix).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        temporal_kernels: Sequence[int | Sequence[int]] = (1, 1, 1, 1),
        temporal_position: str = "a",
        stage_temporal_strides: Sequence[int] = (1, 1, 1, 1),
        stage_spatial_strides: Sequence[int] = (1, 2, 2, 2),
        stem_width: int = 64,
        stem_kernel: Sequence[int] = (1, 7, 7),
        stem_stride: Sequence[int] = (1, 2, 2),
        pool1_kernel: Sequence[int] | None = (1, 3, 3),
        pool1_stride: Sequence[int] = (1, 2, 2),
        pool_after_res2: bool = False,
        in_channels: int = 3,
        num_classes: int = 400,
        norm: str = "bn",
        norm_options: dict[str, Any] | None = None,
        dropout: float = 0.5,
        zero_init_residual: bool = True,
        head_pool: str = "global",
        head_pool_size: Sequence[int] = (7, 7),
        nonlocal_blocks: Sequence[Sequence[int]] | None = None,
        nonlocal_instantiation: str = "embedded_gaussian",
        nonlocal_pool: Sequence[int] | None = (1, 2, 2),
        nonlocal_implementation: str = "efficient",
    ):
        super().__init__()
        if head_pool not in ("global", "local"):
            raise ConfigError("head_pool", f"must be 'global' or 'local', got {head_pool!r}")
        self.head_pool = head_pool
        self.head_pool_size = tuple(int(v) for v in head_pool_size)
        if len(self.head_pool_size) != 2 or min(self.head_pool_size) < 1:
            raise ConfigError("head_pool_size", f"must be 2 ints (H, W) >= 1, got {head_pool_size}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
        if norm not in NORM_KINDS:
            raise ConfigError("norm", f"unknown norm kind {norm!r}; allowed: {NORM_KINDS}")
        n_stages = len(layers)
        for name, seq in (("widths", widths), ("temporal_kernels", temporal_kernels),
                          ("stage_temporal_strides", stage_temporal_strides),
                          ("stage_spatial_strides", stage_spatial_strides)):
            if len(seq) != n_stages:
                raise ValueError(f"{name} has {len(seq)} entries, layers has {n_stages} stages")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError("dropout", f"must be in [0, 1), got {dropout}")
        if num_classes < 1:
            raise ConfigError("num_classes", f"must be >= 1, got {num_classes}")
        nonlocal_at = _nonlocal_positions(nonlocal_blocks, layers)
        opts = dict(norm_options or {})
        self.norm_kind = norm
        self.norm_options = opts
        block_cls = BLOCKS[block]

        k = _triple(stem_kernel, "stem_kernel")
        self.conv1 = nn.Conv3d(in_channels, stem_width, k, stride=_triple(stem_stride, "stem_stride"),
                               padding=tuple(v // 2 for v in k), bias=False)
        self.norm1, self.act1 = build_norm_act(norm, stem_width, True, **opts)
        if pool1_kernel is None:
            self.pool1 = nn.Identity()
        else:
            pk = _triple(pool1_kernel, "pool1_kernel")
            self.pool1 = nn.MaxPool3d(pk, stride=_triple(pool1_stride, "pool1_stride"),
                                      padding=tuple((v - 1) // 2 for v in pk))
        self.pool2 = nn.MaxPool3d((2, 1, 1), stride=(2, 1, 1)) if pool_after_res2 else nn.Identity()

        in_ch = stem_width
        for i in range(n_stages):
            kernels = _per_block(temporal_kernels[i], layers[i], i)
            blocks: OrderedDict[str, nn.Module] = OrderedDict()
            for j in range(layers[i]):
                blocks[str(j)] = block_cls(
                    in_ch, widths[i],
                    stride=stage_spatial_strides[i] if j == 0 else 1,
                    temporal_stride=stage_temporal_strides[i] if j == 0 else 1,
                    temporal_kernel=kernels[j], norm=norm, norm_options=opts,
                    temporal_position=temporal_position,
                )
                in_ch = widths[i] * block_cls.expansion
                if j in nonlocal_at[i]:
                    blocks[f"nonlocal{j}"] = NonLocal3d(
                        in_ch, instantiation=nonlocal_instantiation, pool=nonlocal_pool, norm=norm,
                        norm_options=opts, implementation=nonlocal_implementation)
            self.add_module(f"layer{i + 1}", nn.Sequential(blocks))
        self.num_stages = n_stages
        self.num_features = in_ch
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        nonlocal_blocks = [m for m in self.modules() if isinstance(m, NonLocal3d)]
        in_nonlocal = {id(sub) for block in nonlocal_blocks for sub in block.modules()}
        for m in self.modules():
            if isinstance(m, nn.Conv3d) and id(m) not in in_nonlocal:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)
        if zero_init_residual:
            for m in self.modules():
                last = getattr(m, "last_norm", None)
                if isinstance(last, nn.Module) and getattr(last, "weight", None) is not None:
                    with torch.no_grad():
                        last.weight.zero_()
        for block in nonlocal_blocks:  # their own init (the Non-local code's), not the backbone's
            block.reset_parameters()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) -> res5 feature map (N, num_features, T', H', W')."""
        if x.dim() != 5:
            raise ValueError(f"expected input (N, C, T, H, W), got shape {tuple(x.shape)}")
        x = self.pool1(self.act1(self.norm1(self.conv1(x))))
        x = self.pool2(self.layer1(x))
        for i in range(2, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """res5 map (N, num_features, T', H', W') -> logits (N, num_classes)."""
        if self.head_pool == "global":
            return self.fc(self.dropout(self.avgpool(features).flatten(1)))
        _, _, t, h, w = features.shape
        kernel = (t, min(self.head_pool_size[0], h), min(self.head_pool_size[1], w))
        pooled = F.avg_pool3d(features, kernel, stride=1)  # (N, C, 1, H'', W'')
        logits = self.fc(self.dropout(pooled.flatten(2).transpose(1, 2)))  # (N, positions, classes)
        return logits.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, T, H, W) float -> logits (N, num_classes)."""
        return self.head(self.forward_features(x))
