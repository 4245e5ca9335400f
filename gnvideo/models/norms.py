"""Normalization factory: every norm in a model is built by name from one place.

``build_norm(kind, num_channels, **options)`` returns a layer for input (N, C, T, H, W) with C = ``num_channels``.

=========  ==========================================================  ===========================================
kind       layer                                                       options
=========  ==========================================================  ===========================================
bn         ``nn.BatchNorm3d`` (statistics of the clips on one device)  eps, momentum
syncbn     ``nn.SyncBatchNorm`` (statistics over all devices)          eps, momentum
frozen_bn  ``FrozenBatchNorm3d`` (fixed statistics and affine)         eps
sub_bn     ``SubBatchNorm3d`` (statistics per ``clips_per_group``)     eps, momentum, clips_per_group (required)
gn         ``GroupNorm3d``                                             eps, num_groups | channels_per_group,
                                                                       activation, use_kernel
ln         ``LayerNorm3d`` (GN with one group)                         eps, activation, use_kernel
in         ``InstanceNorm3d`` (GN with one channel per group)          eps, activation, use_kernel
bgn        ``BatchGroupNorm3d`` (Zhou et al., 2020)                    eps, momentum, num_groups | channels_per_group
=========  ==========================================================  ===========================================

``num_groups`` defaults to 32, capped at the channel count (a 16-channel layer gets 16 groups) when neither
``num_groups`` nor ``channels_per_group`` is given. Invalid options raise ``ValueError`` naming the option, the
channel count and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from gnvideo import ops
from gnvideo.models.norm_layers import (
    BatchGroupNorm3d,
    FrozenBatchNorm3d,
    GroupNorm3d,
    InstanceNorm3d,
    LayerNorm3d,
    SubBatchNorm3d,
)

NORM_KINDS = ("bn", "syncbn", "frozen_bn", "sub_bn", "gn", "ln", "in", "bgn")
#: Kinds that run through ``gnvideo.ops.group_norm`` and can fuse the activation that follows.
FUSED_ACTIVATION_KINDS = ("gn", "ln", "in")
DEFAULT_NUM_GROUPS = 32

_ALLOWED_OPTIONS: dict[str, tuple[str, ...]] = {
    "bn": ("eps", "momentum"),
    "syncbn": ("eps", "momentum"),
    "frozen_bn": ("eps",),
    "sub_bn": ("eps", "momentum", "clips_per_group"),
    "gn": ("eps", "num_groups", "channels_per_group", "activation", "use_kernel"),
    "ln": ("eps", "activation", "use_kernel"),
    "in": ("eps", "activation", "use_kernel"),
    "bgn": ("eps", "momentum", "num_groups", "channels_per_group"),
}


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve_groups(kind: str, c: int, options: dict[str, Any]) -> int:
    where = f"norm {kind!r} (num_channels={c})"
    num_groups = options.pop("num_groups", None)
    per_group = options.pop("channels_per_group", None)
    if num_groups is not None and per_group is not None:
        raise ValueError(
            f"{where}: give num_groups or channels_per_group, not both (got num_groups={num_groups}, "
            f"channels_per_group={per_group})"
        )
    if per_group is not None:
        if not _is_int(per_group) or per_group < 1:
            raise ValueError(f"{where}: channels_per_group must be an integer >= 1, got {per_group!r}")
        if c % per_group != 0:
            raise ValueError(
                f"{where}: num_channels={c} is not divisible by channels_per_group={per_group}; "
                f"allowed channels_per_group: {_divisors(c)}"
            )
        return c // per_group
    if num_groups is None:
        return min(DEFAULT_NUM_GROUPS, c)
    if not _is_int(num_groups) or num_groups < 1:
        raise ValueError(f"{where}: num_groups must be an integer >= 1, got {num_groups!r}")
    if c % num_groups != 0:
        raise ValueError(
            f"{where}: num_channels={c} is not divisible by num_groups={num_groups}; allowed num_groups: {_divisors(c)}"
        )
    return num_groups


def _check_common(kind: str, c: int, options: dict[str, Any]) -> None:
    where = f"norm {kind!r} (num_channels={c})"
    if "eps" in options:
        eps = options["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise ValueError(f"{where}: eps must be a number > 0, got {eps!r}")
        options["eps"] = float(eps)
    if "momentum" in options:
        m = options["momentum"]
        allow_none = kind in ("bn", "syncbn", "sub_bn")
        if not (m is None and allow_none):
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
                allowed = "a number in [0, 1] or None" if allow_none else "a number in [0, 1]"
                raise ValueError(f"{where}: momentum must be {allowed}, got {m!r}")
            options["momentum"] = float(m)
    if "activation" in options and options["activation"] not in ops.ACTIVATIONS:
        raise ValueError(f"{where}: activation must be one of {ops.ACTIVATIONS}, got {options['activation']!r}")
    if "use_kernel" in options and not isinstance(options["use_kernel"], bool):
        raise ValueError(f"{where}: use_kernel must be True or False, got {options['use_kernel']!r}")


def build_norm(kind: str, num_channels: int, **options: Any) -> nn.Module:
    """Build the normalization layer ``kind`` for ``num_channels`` channels.

    Args:
        kind: one of ``NORM_KINDS``.
        num_channels: C of the (N, C, T, H, W) input.
        **options: per-kind options (see the module docstring).

    Returns:
        The layer; input and output shape (N, C, T, H, W).

    Raises:
        ValueError: unknown kind, unknown option for the kind, or an invalid value (message names the option, the
            channel count and what is allowed).
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r} (num_channels={num_channels}); allowed: {NORM_KINDS}")
    if not _is_int(num_channels) or num_channels < 1:
        raise ValueError(f"norm {kind!r}: num_channels must be an integer >= 1, got {num_channels!r}")
    c = num_channels
    allowed = _ALLOWED_OPTIONS[kind]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"norm {kind!r} (num_channels={c}): unknown option(s) {unknown}; allowed: {list(allowed)}")
    opts = dict(options)
    _check_common(kind, c, opts)
    if kind == "bn":
        return nn.BatchNorm3d(c, **opts)
    if kind == "syncbn":
        return nn.SyncBatchNorm(c, **opts)
    if kind == "frozen_bn":
        return FrozenBatchNorm3d(c, **opts)
    if kind == "sub_bn":
        k = opts.pop("clips_per_group", None)
        if k is None:
            raise ValueError(f"norm 'sub_bn' (num_channels={c}): option clips_per_group is required (an integer >= 1)")
        if not _is_int(k) or k < 1:
            raise ValueError(f"norm 'sub_bn' (num_channels={c}): clips_per_group must be an integer >= 1, got {k!r}")
        return SubBatchNorm3d(c, clips_per_group=k, **opts)
    if kind == "gn":
        groups = _resolve_groups(kind, c, opts)
        return GroupNorm3d(c, num_groups=groups, **opts)
    if kind == "ln":
        return LayerNorm3d(c, **opts)
    if kind == "in":
        return InstanceNorm3d(c, **opts)
    groups = _resolve_groups(kind, c, opts)
    return BatchGroupNorm3d(c, num_groups=groups, **opts)


def build_norm_act(kind: str, num_channels: int, relu: bool, **options: Any) -> tuple[nn.Module, nn.Module]:
    """Build a norm and the activation after it, fusing the ReLU into GN-family norms.

    Args:
        kind: one of ``NORM_KINDS``.
        num_channels: C.
        relu: whether a ReLU follows the norm.
        **options: norm options; ``activation`` must not be given here.

    Returns:
        (norm, act): for GN-family kinds with ``relu`` the norm applies the ReLU itself and ``act`` is
        ``nn.Identity``; otherwise ``act`` is ``nn.ReLU`` (or ``nn.Identity`` when ``relu`` is False).
    """
    if "activation" in options:
        raise ValueError(
            f"norm {kind!r} (num_channels={num_channels}): option activation is set by the model, not by norm_options"
        )
    if relu and kind in FUSED_ACTIVATION_KINDS:
        return build_norm(kind, num_channels, activation="relu", **options), nn.Identity()
    return build_norm(kind, num_channels, **options), (nn.ReLU(inplace=True) if relu else nn.Identity())


def norm_factory(kind: str, **options: Any) -> Callable[..., nn.Module]:
    """A pytorchvideo-style norm callable: ``norm(num_features=C, eps=..., momentum=...)``.

    ``eps`` passed by the caller is used unless ``options`` sets it; ``momentum`` is used only by kinds that have
    running statistics. Options are validated on each call (they depend on C).
    """
    if kind not in NORM_KINDS:
        raise ValueError(f"unknown norm kind {kind!r}; allowed: {NORM_KINDS}")

    def make(num_features: int, eps: float | None = None, momentum: float | None = None) -> nn.Module:
        opts = dict(options)
        if eps is not None:
            opts.setdefault("eps", eps)
        if momentum is not None and "momentum" in _ALLOWED_OPTIONS[kind]:
            opts.setdefault("momentum", momentum)
        return build_norm(kind, num_features, **opts)

    return make


__all__ = ["FUSED_ACTIVATION_KINDS", "NORM_KINDS", "build_norm", "build_norm_act", "norm_factory"]
