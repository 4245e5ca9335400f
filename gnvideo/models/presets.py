"""Named 3D ResNet configurations and ``build_model``.

Temporal output sizes (T_in -> res5 T) for 224x224 input (res5 7x7):

- ``i3d_r50`` / ``i3d_r101``: ResNet-50/101 I3D of the Non-local paper (Wang et al., 2018): conv1 5x7x7 stride
  (2, 2, 2), max-pool (2, 3, 3) stride (2, 2, 2), 3x1x1 first convs in the marked blocks, (2, 1, 1) max-pool after
  res2. 32 -> 4, 64 -> 8. 28.0M parameters with 400 classes (R50).
- ``i3d_r50_nl5`` / ``i3d_r50_nl10``: ``i3d_r50`` with the Non-local paper's non-local blocks
  (``gnvideo.models.nonlocal_block``: embedded Gaussian, (1, 2, 2) max-pool before phi and g, the backbone's norm):
  after residual blocks 1 and 3 of res3 and 1, 3 and 5 of res4 (0-based; the Non-local code's ``LAYER_MOD = 2``,
  PySlowFast's ``I3D_NLN`` ``NONLOCAL.LOCATION``), or after every block of res3 and res4 (``LAYER_MOD = 1``).
  ``i3d_r50_nl5_dot``: the 5 blocks with the dot-product instantiation (mmaction2's other NL model). 35.4M / 42.8M
  parameters with 400 classes.
- ``i3d_r50_pytorchvideo``: pytorchvideo's 8-frame ``i3d_r50`` (conv1 and first pool with temporal stride 1, then the
  (2, 1, 1) pool after res2). 8 -> 4. Same parameters as ``i3d_r50``.
- ``slow_r50``: Slow pathway of SlowFast (pytorchvideo ``slow_r50``): temporal kernels only in res4 and res5, no
  temporal downsampling. 8 -> 8.
- ``r3d_18`` / ``r3d_34`` / ``r3d_10``: 3x3x3 basic blocks, temporal stride 2 in res3..res5. ``r3d_50``: bottleneck
  with 3x3x3 middle convs. 16 -> 2.
- ``tiny_r3d``: basic blocks, widths 16/32/64/128, one block per stage, for CPU demos on small clips.
  ``tiny_r3d_nl``: the same with a non-local block after the res3 and the res4 block.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from gnvideo.errors import ConfigError
from gnvideo.models.resnet3d import ResNet3d

_I3D_R50_KERNELS = ((3, 3, 3), (3, 1, 3, 1), (3, 1, 3, 1, 3, 1), (1, 3, 1))
_I3D_R101_KERNELS = ((3, 3, 3), (3, 1, 3, 1), (3, 1) * 11 + (1,), (1, 3, 1))

#: Residual blocks (0-based, per stage res2..res5) that a non-local block follows.
NONLOCAL_5 = ((), (1, 3), (1, 3, 5), ())
NONLOCAL_10 = ((), (0, 1, 2, 3), (0, 1, 2, 3, 4, 5), ())

_I3D_COMMON: dict[str, Any] = dict(
    block="bottleneck",
    stem_kernel=(5, 7, 7),
    stem_stride=(2, 2, 2),
    pool1_kernel=(2, 3, 3),
    pool1_stride=(2, 2, 2),
    pool_after_res2=True,
)
_R3D_COMMON: dict[str, Any] = dict(
    block="basic",
    temporal_kernels=(3, 3, 3, 3),
    stage_temporal_strides=(1, 2, 2, 2),
    stem_kernel=(3, 7, 7),
    stem_stride=(1, 2, 2),
    pool1_kernel=(1, 3, 3),
    pool1_stride=(1, 2, 2),
)

PRESETS: dict[str, dict[str, Any]] = {
    "i3d_r50": dict(_I3D_COMMON, layers=(3, 4, 6, 3), temporal_kernels=_I3D_R50_KERNELS),
    "i3d_r50_nl5": dict(_I3D_COMMON, layers=(3, 4, 6, 3), temporal_kernels=_I3D_R50_KERNELS,
                        nonlocal_blocks=NONLOCAL_5),
    "i3d_r50_nl10": dict(_I3D_COMMON, layers=(3, 4, 6, 3), temporal_kernels=_I3D_R50_KERNELS,
                         nonlocal_blocks=NONLOCAL_10),
    "i3d_r50_nl5_dot": dict(_I3D_COMMON, layers=(3, 4, 6, 3), temporal_kernels=_I3D_R50_KERNELS,
                            nonlocal_blocks=NONLOCAL_5, nonlocal_instantiation="dot_product"),
    "i3d_r101": dict(_I3D_COMMON, layers=(3, 4, 23, 3), temporal_kernels=_I3D_R101_KERNELS),
    "i3d_r50_pytorchvideo": dict(
        _I3D_COMMON, layers=(3, 4, 6, 3), temporal_kernels=_I3D_R50_KERNELS, stem_stride=(1, 2, 2),
        pool1_kernel=(1, 3, 3), pool1_stride=(1, 2, 2),
    ),
    "slow_r50": dict(
        block="bottleneck", layers=(3, 4, 6, 3), temporal_kernels=(1, 1, 3, 3), stem_kernel=(1, 7, 7),
        stem_stride=(1, 2, 2), pool1_kernel=(1, 3, 3), pool1_stride=(1, 2, 2),
    ),
    "r3d_10": dict(_R3D_COMMON, layers=(1, 1, 1, 1)),
    "r3d_18": dict(_R3D_COMMON, layers=(2, 2, 2, 2)),
    "r3d_34": dict(_R3D_COMMON, layers=(3, 4, 6, 3)),
    "r3d_50": dict(_R3D_COMMON, block="bottleneck", layers=(3, 4, 6, 3), temporal_position="b"),
    "tiny_r3d": dict(_R3D_COMMON, layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
    "tiny_r3d_nl": dict(_R3D_COMMON, layers=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16,
                        nonlocal_blocks=((), (0,), (0,), ())),
}

_BUILD_ARGS = ("num_classes", "norm", "norm_options", "dropout", "zero_init_residual")
_OVERRIDABLE = tuple(p for p in inspect.signature(ResNet3d).parameters if p not in _BUILD_ARGS)


def build_model(
    name: str,
    num_classes: int = 400,
    norm: str = "bn",
    norm_options: dict[str, Any] | None = None,
    dropout: float = 0.5,
    zero_init_residual: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Build preset ``name`` with every norm of kind ``norm``.

    Args:
        name: a key of ``PRESETS``.
        num_classes: logits.
        norm: one of ``NORM_KINDS``.
        norm_options: options for every norm (``build_norm``), e.g. ``{"num_groups": 32}``.
        dropout: dropout before fc.
        zero_init_residual: last norm of each residual block starts with weight 0.
        **overrides: any other ``ResNet3d`` argument (e.g. ``stage_temporal_strides``, ``in_channels``).

    Returns:
        A ``ResNet3d``: (N, 3, T, H, W) float -> logits (N, num_classes).
    """
    if name not in PRESETS:
        raise ConfigError("backbone", f"unknown model {name!r}; available presets: {sorted(PRESETS)}")
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for model {name!r}; allowed: {list(_OVERRIDABLE)}")
    kwargs = dict(PRESETS[name], **overrides)
    return ResNet3d(
        num_classes=num_classes, norm=norm, norm_options=norm_options, dropout=dropout,
        zero_init_residual=zero_init_residual, **kwargs,
    )
