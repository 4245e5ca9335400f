"""2D -> 3D inflation of ResNet weights (torchvision / timm naming) into a ``ResNet3d``.

2D keys ``conv1``, ``bn1``, ``layerX.Y.convZ``, ``layerX.Y.bnZ``, ``layerX.Y.downsample.{0,1}``, ``fc`` (torchvision
``resnet50`` with BatchNorm or GroupNorm, timm ``resnet50`` / ``resnet50_gn``) map to ours by renaming ``bnZ`` to
``normZ``. A conv weight (O, I, kh, kw) becomes (O, I, kt, kh, kw):

- ``mean``: repeated over time and divided by kt (a static clip gives the 2D response away from temporal borders);
- ``center``: placed at the temporal center t = kt // 2, zeros elsewhere (a static clip gives exactly the 2D response).

Norms map one to one: BatchNorm state (it has ``running_mean``) only into the "bn" family of the norm registry,
GroupNorm state only into the "gn" family (``gnvideo.models.norms.kinds_of_family``). Anything else is an error
naming the layer. The fc is skipped when the class counts differ. Non-local blocks have no 2D counterpart: they keep
their initialization (the identity) and are reported apart, not as missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from gnvideo.models.nonlocal_block import fresh_nonlocal_blocks
from gnvideo.models.norms import family_of, is_norm_layer, kinds_of_family

INFLATION_MODES = ("mean", "center")


@dataclass
class InflationReport:
    """What ``inflate_2d_state_dict`` did.

    Attributes:
        loaded: model keys filled from the 2D state dict.
        inflated: the subset of ``loaded`` that are conv weights inflated over time.
        skipped: 2D key -> reason it was not used.
        missing: model keys left as they were, outside the non-local blocks.
        fresh_nonlocal: the model's non-local blocks (names), all left at their initialization.
    """

    loaded: list[str] = field(default_factory=list)
    inflated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    fresh_nonlocal: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"inflation: loaded {len(self.loaded)} tensors ({len(self.inflated)} conv weights inflated), "
            f"skipped {len(self.skipped)}, missing {len(self.missing)}"
            + (f", {len(self.fresh_nonlocal)} non-local blocks at their initialization" if self.fresh_nonlocal else "")
        ]
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        lines += [f"  missing {k}" for k in self.missing]
        return "\n".join(lines)


def _to_3d_key(key: str) -> str:
    parts = key.split(".")
    return ".".join("norm" + p[2:] if p.startswith("bn") and p[2:].isdigit() else p for p in parts)


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "model."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


_FAMILY_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm", "bgn": "BatchGroupNorm"}


def _check_norms(model: nn.Module, sd_3d_named: Mapping[str, torch.Tensor]) -> None:
    """Raise if a 2D norm's family (BN: has running_mean; GN: affine only) differs from the model's layer."""
    for name, module in model.named_modules():
        if not is_norm_layer(module):
            continue
        if not any(f"{name}.{t}" in sd_3d_named for t in ("weight", "bias", "running_mean")):
            continue
        source = "bn" if f"{name}.running_mean" in sd_3d_named else "gn"
        target = family_of(module)
        if source != target:
            kinds = kinds_of_family(source)
            hint = ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
            raise ValueError(
                f"norm mismatch at layer {name!r}: the 2D state dict holds {_FAMILY_NAMES[source]} weights, the "
                f"model has {type(module).__name__} ({_FAMILY_NAMES.get(target or '', target)}); build the model "
                f"with norm {hint}"
            )


def _inflate(w2d: torch.Tensor, shape3d: torch.Size, mode: str) -> torch.Tensor:
    kt = shape3d[2]
    if mode == "mean":
        return w2d.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    w = w2d.new_zeros(shape3d)
    w[:, :, kt // 2] = w2d
    return w


def inflate_2d_state_dict(
    model: nn.Module,
    state_dict_2d: Mapping[str, torch.Tensor],
    mode: str = "mean",
    verbose: bool = False,
) -> InflationReport:
    """Load a 2D ResNet state dict into a 3D ResNet, inflating conv kernels over time.

    Args:
        model: a ``ResNet3d`` (or any module with the same names).
        state_dict_2d: torchvision / timm ResNet state dict (a ``module.`` or ``model.`` prefix is removed).
        mode: "mean" or "center" (see the module docstring).
        verbose: print the report.

    Returns:
        An ``InflationReport`` (``str(report)`` is a summary of loaded, skipped and missing keys).

    Raises:
        ValueError: unknown mode, norm kind mismatch (names the layer), or a tensor whose shape cannot map.
    """
    if mode not in INFLATION_MODES:
        raise ValueError(f"mode must be one of {INFLATION_MODES}, got {mode!r}")
    target = model.state_dict()
    renamed = {_to_3d_key(_strip_prefix(k)): (k, v) for k, v in state_dict_2d.items()}
    _check_norms(model, {k: v for k, (_, v) in renamed.items()})

    report = InflationReport()
    new_state: dict[str, torch.Tensor] = {}
    for key3d, (key2d, value) in renamed.items():
        if key3d not in target:
            if not key3d.endswith("num_batches_tracked"):  # BN step counter; frozen_bn has none
                report.skipped[key2d] = "no such tensor in the model"
            continue
        want = target[key3d]
        if value.dim() == 4 and want.dim() == 5:
            if value.shape[:2] != want.shape[:2] or value.shape[2:] != want.shape[3:]:
                raise ValueError(f"layer {key3d!r}: 2D kernel {tuple(value.shape)} does not fit {tuple(want.shape)}")
            new_state[key3d] = _inflate(value.to(want.dtype), want.shape, mode)
            report.inflated.append(key3d)
        elif value.shape == want.shape:
            new_state[key3d] = value.to(want.dtype)
        elif key3d.startswith("fc."):
            report.skipped[key2d] = f"class count differs (2D {value.shape[0]}, model {want.shape[0]})"
            continue
        else:
            raise ValueError(f"layer {key3d!r}: 2D shape {tuple(value.shape)} does not match {tuple(want.shape)}")
        report.loaded.append(key3d)
    model.load_state_dict(new_state, strict=False)
    report.fresh_nonlocal, report.missing = fresh_nonlocal_blocks(model, [k for k in target if k not in new_state])
    if verbose:
        print(report)
    return report
