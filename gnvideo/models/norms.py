"""Norm registry: one table of normalization kinds, and the factory built from it.

``NORMS`` maps a kind name to a :class:`NormKind` row (layer class, allowed and required options, whether the ReLU
that follows is fused into the op, whether the statistics depend on the batch, and the family used for 2D -> 3D
inflation and for the order of report rows). Everything else derives from that table: ``build_norm`` (factory and
option validation), ``NORM_KINDS`` (CLI and model choices), ``FUSED_ACTIVATION_KINDS``, ``BATCH_DEPENDENT_KINDS``
(precise BN), ``family_of`` / ``kinds_of_family`` (inflation checks and hints), ``REPORT_ORDER`` / ``report_row``
(``gnvideo report``) and ``DEMO_KINDS`` (``gnvideo demo --norms``).

``build_norm(kind, num_channels, **options)`` returns a layer for input (N, C, T, H, W) with C = ``num_channels``.
``num_groups`` defaults to 32, capped at the channel count (a 16-channel layer gets 16 groups) when neither
``num_groups`` nor ``channels_per_group`` is given. Invalid options raise :class:`gnvideo.errors.ConfigError` with the
key ``norm`` or ``norm_options.<option>`` (``build_model``'s words), the channel count and what is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from gnvideo.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

DEFAULT_NUM_GROUPS = 32

#: Families, in report order. "bn": BatchNorm statistics per channel (ImageNet BN weights inflate into these);
#: "gn": statistics per sample (ImageNet GN weights inflate into these); "bgn": per channel group over the batch.
FAMILIES = ("bn", "gn", "bgn")


@dataclass(frozen=True)
class NormKind:
    """One row of the norm registry.

    Attributes:
        name: the kind, as written in configs (``model.norm``).
        layer: the layer class as ``"module:Class"`` (imported when first built, so that reading the table needs no
            torch); built as ``layer_class(num_channels, **options)``.
        options: option names ``norm_options`` may hold for this kind.
        required: options that must be given.
        fused_activation: the ReLU after the norm runs inside ``gnvideo.ops.group_norm``.
        batch_dependent: training statistics come from the batch (running statistics exist; precise BN applies).
        family: "bn", "gn" or "bgn" (see ``FAMILIES``).
        report_row: the row of ``gnvideo report`` its results fill (``sub_bn`` reproduces per-GPU BN: row "bn").
        grouped: takes ``num_groups`` / ``channels_per_group``.
        momentum_none: ``momentum=None`` (cumulative average) is allowed.
        demo: offered by ``gnvideo demo --norms``.
        description: one line for docs and ``--help``.
    """

    name: str
    layer: str
    options: tuple[str, ...]
    family: str
    batch_dependent: bool
    description: str
    required: tuple[str, ...] = ()
    fused_activation: bool = False
    report_row: str | None = None
    grouped: bool = False
    momentum_none: bool = False
    demo: bool = False

    @property
    def row(self) -> str:
        return self.report_row or self.name

    @property
    def layer_class(self) -> type[nn.Module]:
        module, _, name = self.layer.partition(":")
        return getattr(import_module(module), name)


_GN_OPTS = ("eps", "activation", "use_kernel")
_LAYERS = "gnvideo.models.norm_layers"

NORMS: dict[str, NormKind] = {
    k.name: k
    for k in (
        NormKind("bn", "torch.nn:BatchNorm3d", ("eps", "momentum"), "bn", True,
                 "BatchNorm3d, statistics of the clips on one device (the paper's per-GPU BN)",
                 momentum_none=True, demo=True),
        NormKind("syncbn", "torch.nn:SyncBatchNorm", ("eps", "momentum"), "bn", True,
                 "BN synchronized across devices", momentum_none=True),
        NormKind("frozen_bn", f"{_LAYERS}:FrozenBatchNorm3d", ("eps",), "bn", False,
                 "fixed statistics and affine (fine-tuning)"),
        NormKind("sub_bn", f"{_LAYERS}:SubBatchNorm3d", ("eps", "momentum", "clips_per_group"), "bn", True,
                 "BN with training statistics per group of clips_per_group clips (k clips per GPU on one device)",
                 required=("clips_per_group",), report_row="bn", momentum_none=True),
        NormKind("gn", f"{_LAYERS}:GroupNorm3d", ("num_groups", "channels_per_group", *_GN_OPTS), "gn", False,
                 "GroupNorm through gnvideo.ops.group_norm", fused_activation=True, grouped=True, demo=True),
        NormKind("ln", f"{_LAYERS}:LayerNorm3d", _GN_OPTS, "gn", False, "GN with one group",
                 fused_activation=True, demo=True),
        NormKind("in", f"{_LAYERS}:InstanceNorm3d", _GN_OPTS, "gn", False, "GN with one channel per group",
                 fused_activation=True, demo=True),
        NormKind("bgn", f"{_LAYERS}:BatchGroupNorm3d", ("eps", "momentum", "num_groups", "channels_per_group"),
                 "bgn", True,
                 "Batch Group Norm (Zhou et al. 2020): statistics per channel group over the batch",
                 grouped=True, demo=True),
    )
}

NORM_KINDS: tuple[str, ...] = tuple(NORMS)
#: Kinds that run through ``gnvideo.ops.group_norm`` and can fuse the activation that follows.
FUSED_ACTIVATION_KINDS: tuple[str, ...] = tuple(k for k, v in NORMS.items() if v.fused_activation)
#: Kinds whose statistics come from the training batch (they hold running statistics).
BATCH_DEPENDENT_KINDS: tuple[str, ...] = tuple(k for k, v in NORMS.items() if v.batch_dependent)
#: Kinds offered by ``gnvideo demo``.
DEMO_KINDS: tuple[str, ...] = tuple(k for k, v in NORMS.items() if v.demo)
#: Report rows, by family then table order.
REPORT_ORDER: tuple[str, ...] = tuple(
    sorted(dict.fromkeys(v.row for v in NORMS.values()),
           key=lambda r: (FAMILIES.index(NORMS[r].family), NORM_KINDS.index(r)))
)


def kinds_of_family(family: str) -> tuple[str, ...]:
    """Kinds of ``family`` ("bn", "gn", "bgn") in table order."""
    return tuple(k for k, v in NORMS.items() if v.family == family)


def report_row(kind: str) -> str:
    """The report row a result of norm ``kind`` fills (unknown kinds get their own row)."""
    return NORMS[kind].row if kind in NORMS else kind


def family_of(module: nn.Module) -> str | None:
    """Family of a norm layer instance (ours, or torch's 2D BatchNorm / GroupNorm), None for other modules.

    The most specific registered class wins (``SubBatchNorm3d`` is a ``BatchNorm3d``; both are "bn").
    """
    from torch import nn

    from gnvideo.models.norm_layers import BatchGroupNorm3d, FrozenBatchNorm3d, GroupNorm3d

    for kind in NORMS.values():
        if type(module) is kind.layer_class:
            return kind.family
    if isinstance(module, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm3d)):
        return "bn"
    if isinstance(module, (GroupNorm3d, nn.GroupNorm)):
        return "gn"
    if isinstance(module, BatchGroupNorm3d):
        return "bgn"
    return None


def is_norm_layer(module: nn.Module) -> bool:
    """True for every layer ``build_norm`` makes and for torch's norm layers (weight-decay exemption)."""
    from torch import nn

    return family_of(module) is not None or isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._NormBase))


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _option_error(option: str, where: str, text: str) -> ConfigError:
    return ConfigError(f"norm_options.{option}", f"{where}: {text}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _resolve_groups(kind: str, c: int, options: dict[str, Any]) -> int:
    where = f"norm {kind!r} (num_channels={c})"
    num_groups = options.pop("num_groups", None)
    per_group = options.pop("channels_per_group", None)
    if num_groups is not None and per_group is not None:
        raise ConfigError(
            "norm_options", f"{where}: give num_groups or channels_per_group, not both (got num_groups={num_groups}, "
            f"channels_per_group={per_group})"
        )
    if per_group is not None:
        if not _is_int(per_group) or per_group < 1:
            raise _option_error("channels_per_group", where,
                                f"channels_per_group must be an integer >= 1, got {per_group!r}")
        if c % per_group != 0:
            raise _option_error("channels_per_group", where,
                                f"num_channels={c} is not divisible by channels_per_group={per_group}; "
                                f"allowed channels_per_group: {_divisors(c)}")
        return c // per_group
    if num_groups is None:
        return min(DEFAULT_NUM_GROUPS, c)
    if not _is_int(num_groups) or num_groups < 1:
        raise _option_error("num_groups", where, f"num_groups must be an integer >= 1, got {num_groups!r}")
    if c % num_groups != 0:
        raise _option_error("num_groups", where, f"num_channels={c} is not divisible by num_groups={num_groups}; "
                            f"allowed num_groups: {_divisors(c)}")
    return num_groups


def _check_options(kind: NormKind, c: int, options: dict[str, Any]) -> None:
    where = f"norm {kind.name!r} (num_channels={c})"
    for name in kind.required:
        if options.get(name) is None:
            raise _option_error(name, where, f"option {name} is required (an integer >= 1)")
    if "clips_per_group" in options:
        k = options["clips_per_group"]
        if not _is_int(k) or k < 1:
            raise _option_error("clips_per_group", where, f"clips_per_group must be an integer >= 1, got {k!r}")
    if "eps" in options:
        eps = options["eps"]
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps <= 0:
            raise _option_error("eps", where, f"eps must be a number > 0, got {eps!r}")
        options["eps"] = float(eps)
    if "momentum" in options:
        m = options["momentum"]
        if not (m is None and kind.momentum_none):
            if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
                allowed = "a number in [0, 1] or None" if kind.momentum_none else "a number in [0, 1]"
                raise _option_error("momentum", where, f"momentum must be {allowed}, got {m!r}")
            options["momentum"] = float(m)
    if "activation" in options:
        from gnvideo.ops import ACTIVATIONS

        if options["activation"] not in ACTIVATIONS:
            raise _option_error("activation", where,
                                f"activation must be one of {ACTIVATIONS}, got {options['activation']!r}")
    if "use_kernel" in options and not isinstance(options["use_kernel"], bool):
        raise _option_error("use_kernel", where, f"use_kernel must be True or False, got {options['use_kernel']!r}")


def build_norm(kind: str, num_channels: int, **options: Any) -> nn.Module:
    """Build the normalization layer ``kind`` for ``num_channels`` channels.

    Args:
        kind: one of ``NORM_KINDS``.
        num_channels: C of the (N, C, T, H, W) input.
        **options: per-kind options (``NORMS[kind].options``).

    Returns:
        The layer; input and output shape (N, C, T, H, W).

    Raises:
        ConfigError: unknown kind (key ``norm``), unknown option for the kind, or an invalid value (key
            ``norm_options.<option>``; the message gives the channel count and what is allowed).
    """
    if kind not in NORMS:
        raise ConfigError("norm", f"unknown norm kind {kind!r} (num_channels={num_channels}); allowed: {NORM_KINDS}")
    if not _is_int(num_channels) or num_channels < 1:
        raise ValueError(f"norm {kind!r}: num_channels must be an integer >= 1, got {num_channels!r}")
    row, c = NORMS[kind], num_channels
    unknown = sorted(set(options) - set(row.options))
    if unknown:
        raise ConfigError("norm_options", f"norm {kind!r} (num_channels={c}): unknown option(s) {unknown}; "
                          f"allowed: {list(row.options)}")
    opts = dict(options)
    _check_options(row, c, opts)
    if row.grouped:
        opts["num_groups"] = _resolve_groups(kind, c, opts)
    return row.layer_class(c, **opts)


def build_norm_act(kind: str, num_channels: int, relu: bool, **options: Any) -> tuple[nn.Module, nn.Module]:
    """Build a norm and the activation after it, fusing the ReLU into kinds with ``fused_activation``.

    Args:
        kind: one of ``NORM_KINDS``.
        num_channels: C.
        relu: whether a ReLU follows the norm.
        **options: norm options; ``activation`` must not be given here.

    Returns:
        (norm, act): for fused kinds with ``relu`` the norm applies the ReLU itself and ``act`` is ``nn.Identity``;
        otherwise ``act`` is ``nn.ReLU`` (or ``nn.Identity`` when ``relu`` is False).
    """
    if "activation" in options:
        raise _option_error("activation", f"norm {kind!r} (num_channels={num_channels})",
                            "option activation is set by the model, not by norm_options")
    from torch import nn

    if relu and kind in FUSED_ACTIVATION_KINDS:
        return build_norm(kind, num_channels, activation="relu", **options), nn.Identity()
    return build_norm(kind, num_channels, **options), (nn.ReLU(inplace=True) if relu else nn.Identity())


def norm_factory(kind: str, **options: Any) -> Callable[..., nn.Module]:
    """A pytorchvideo-style norm callable: ``norm(num_features=C, eps=..., momentum=...)``.

    ``eps`` passed by the caller is used unless ``options`` sets it; ``momentum`` is used only by kinds that have
    running statistics. Options are validated on each call (they depend on C).
    """
    if kind not in NORMS:
        raise ConfigError("norm", f"unknown norm kind {kind!r}; allowed: {NORM_KINDS}")

    def make(num_features: int, eps: float | None = None, momentum: float | None = None) -> nn.Module:
        opts = dict(options)
        if eps is not None:
            opts.setdefault("eps", eps)
        if momentum is not None and "momentum" in NORMS[kind].options:
            opts.setdefault("momentum", momentum)
        return build_norm(kind, num_features, **opts)

    return make


def norm_table_markdown() -> str:
    """The registry as a markdown table (kind, what, options, batch-dependent, family) for docs."""
    lines = ["| kind | what | options | batch-dependent | family |", "| --- | --- | --- | --- | --- |"]
    for k in NORMS.values():
        opts = ", ".join(f"`{o}`" + (" (required)" if o in k.required else "") for o in k.options
                         if o != "activation")
        lines.append(f"| `{k.name}` | {k.description} | {opts} | {'yes' if k.batch_dependent else 'no'} | "
                     f"{k.family} |")
    return "\n".join(lines)


__all__ = [
    "BATCH_DEPENDENT_KINDS",
    "DEMO_KINDS",
    "FAMILIES",
    "FUSED_ACTIVATION_KINDS",
    "NORMS",
    "NORM_KINDS",
    "REPORT_ORDER",
    "NormKind",
    "build_norm",
    "build_norm_act",
    "family_of",
    "is_norm_layer",
    "kinds_of_family",
    "norm_factory",
    "norm_table_markdown",
    "report_row",
]
