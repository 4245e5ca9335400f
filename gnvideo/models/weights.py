"""Weight loading for 3D ResNets: ImageNet initialization by name, and fine-tuning from checkpoints.

ImageNet sources (``IMAGENET_SOURCES``), each loaded through its library's own weight API (downloaded once into that
library's cache, then read from there without the network), or from a local copy of the same file:

=====================  ==========  ======================================================  ===========================
name                   norm        weights                                                 local file
=====================  ==========  ======================================================  ===========================
torchvision_resnet50   BatchNorm   torchvision ``ResNet50_Weights.IMAGENET1K_V1``          ``resnet50-0676ba61.pth``
torchvision_resnet101  BatchNorm   torchvision ``ResNet101_Weights.IMAGENET1K_V1``         ``resnet101-63fe2227.pth``
timm_resnet50_gn       GroupNorm   timm ``resnet50_gn.a1h_in1k`` (32 groups)               ``pytorch_model.bin`` or
                                                                                           ``model.safetensors``
=====================  ==========  ======================================================  ===========================

``imagenet_state_dict(name)`` returns the 2D state dict; ``inflate_2d_state_dict`` (``gnvideo.models.inflate``) puts it
into the 3D model. A BN source initializes models of the "bn" norm family, a GN source the "gn" family.

Fine-tuning: ``load_matching(model, path)`` reads a gnvideo Lightning ``.ckpt``, a plain state dict, or a
pytorchvideo / PySlowFast checkpoint (``model_state``, ``blocks.*`` names), loads every tensor whose name and shape
match the model, leaves the others as initialized (the classifier when the class count differs), and says what it
skipped.

Files are read without running code (``gnvideo.models.checkpoint_io.read_checkpoint``). A file that initializes
only part of the model is an error naming the first tensors it lacks, not a log line:

- ImageNet (``pretrained_2d``, ``pretrained_2d_file``): every tensor of the stem and the stages comes from the 2D
  weights, and every 2D tensor finds its place; only the classifier (``fc``) may be left out on either side.
- ``init_from``: every tensor of the stem and the stages loads (only the classifier keeps its initialization), and
  no tensor of the file with a model name has another shape outside the classifier; tensors of the file the model
  does not have are skipped and listed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gnvideo.errors import ConfigError
from gnvideo.models.checkpoint_io import WeightsError, check_checkpoint, read_checkpoint, unwrap_state_dict
from gnvideo.models.nonlocal_block import fresh_nonlocal_blocks
from gnvideo.models.norms import NORMS

#: ImageNet input statistics (RGB, [0, 1] units) of torchvision's and timm's ResNet weights
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailable(WeightsError):
    """ImageNet weights could not be had from the library (no network, no cache) nor from a local file."""


@dataclass(frozen=True)
class ImageNetSource:
    """A named 2D ImageNet checkpoint.

    Attributes:
        name: the name used in configs (``model.pretrained_2d``).
        family: norm family of its layers ("bn" or "gn", as in ``gnvideo.models.norms``).
        library: "torchvision" or "timm".
        weights: the library's name of the weights.
        build: ``build(pretrained) -> nn.Module``: the library's 2D model, with ImageNet weights when ``pretrained``.
        file_hint: name of the file the library downloads (what to copy for offline use).
        mean: per-channel RGB input mean the weights were trained with, in [0, 1] units (the library's own
            preprocessing of these weights; ``data.mean`` follows it unless set).
        std: per-channel RGB input std, in [0, 1] units.
    """

    name: str
    family: str
    library: str
    weights: str
    build: Callable[[bool], nn.Module]
    file_hint: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def input_statistics(pretrained_2d: str | None) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(mean, std) of the input the weights named by ``pretrained_2d`` expect; None when no named source is given
    (a file path or no ImageNet initialization: the data's own default applies)."""
    source = IMAGENET_SOURCES.get(pretrained_2d) if pretrained_2d else None
    return (source.mean, source.std) if source is not None else None


def _torchvision(arch: str, weights: str) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        import torchvision

        return torchvision.models.get_model(arch, weights=weights if pretrained else None)

    return build


def _timm(arch: str, tag: str) -> Callable[[bool], nn.Module]:
    def build(pretrained: bool) -> nn.Module:
        try:
            import timm
        except ImportError as e:
            raise WeightsUnavailable("pretrained_2d", f"{arch}: timm is not installed (pip install timm)") from e
        return timm.create_model(f"{arch}.{tag}" if pretrained else arch, pretrained=pretrained)

    return build


IMAGENET_SOURCES: dict[str, ImageNetSource] = {
    s.name: s
    for s in (
        ImageNetSource("torchvision_resnet50", "bn", "torchvision", "ResNet50_Weights.IMAGENET1K_V1",
                       _torchvision("resnet50", "ResNet50_Weights.IMAGENET1K_V1"), "resnet50-0676ba61.pth"),
        ImageNetSource("torchvision_resnet101", "bn", "torchvision", "ResNet101_Weights.IMAGENET1K_V1",
                       _torchvision("resnet101", "ResNet101_Weights.IMAGENET1K_V1"), "resnet101-63fe2227.pth"),
        ImageNetSource("timm_resnet50_gn", "gn", "timm", "resnet50_gn.a1h_in1k", _timm("resnet50_gn", "a1h_in1k"),
                       "model.safetensors (hub timm/resnet50_gn.a1h_in1k)"),
    )
}


def imagenet_state_dict(name: str, file: str | os.PathLike | None = None, pretrained: bool = True) -> dict:
    """2D state dict of the ImageNet source ``name``.

    Args:
        name: a key of ``IMAGENET_SOURCES``.
        file: a local copy of the source's weights; read instead of asking the library.
        pretrained: False builds the library's model with random weights (same code path, for tests).

    Returns:
        The 2D state dict (torchvision / timm ResNet names: ``conv1``, ``bn1``, ``layerX.Y.*``, ``fc``).

    Raises:
        ConfigError: unknown name (key ``pretrained_2d``).
        CheckpointError: ``file`` cannot be read safely (key ``pretrained_2d_file``).
        WeightsUnavailable: neither the library (network or cache) nor ``file`` gave the weights; names the source.
    """
    if name not in IMAGENET_SOURCES:
        raise ConfigError("pretrained_2d", f"unknown ImageNet source {name!r}; available: {sorted(IMAGENET_SOURCES)}")
    src = IMAGENET_SOURCES[name]
    if file is not None:
        return unwrap_state_dict(read_checkpoint(file, "pretrained_2d_file"), "pretrained_2d_file")
    try:
        return src.build(pretrained).state_dict()
    except WeightsUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - download/cache errors differ per library and version
        raise WeightsUnavailable(
            "pretrained_2d",
            f"ImageNet weights {name!r} ({src.library} {src.weights}) are not available: {type(e).__name__}: {e}. "
            f"Without network access, copy the file ({src.file_hint}) here and give it with "
            f"--model.pretrained_2d_file PATH (checkpoints/README.md)"
        ) from e


def check_source_family(name: str, norm: str) -> None:
    """Raise ``ValueError`` when ImageNet source ``name`` has another norm family than model norm ``norm``."""
    src = IMAGENET_SOURCES[name]
    fam = NORMS[norm].family if norm in NORMS else None
    if fam != src.family:
        fitting = [s.name for s in IMAGENET_SOURCES.values() if s.family == fam]
        hint = f"use {' or '.join(fitting)}" if fitting else "no ImageNet source has this norm family"
        raise ValueError(f"{name} holds {src.family.upper()} weights but norm {norm!r} is of the {fam} family: {hint}")


@dataclass
class LoadReport:
    """What ``load_matching`` did: loaded names, skipped names with the reason, model names left as initialized.

    ``fresh_nonlocal`` names the non-local blocks the checkpoint had nothing for (a checkpoint of the model without
    them): they keep their initialization, under which they are the identity, and their tensors are not in
    ``missing``.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    fresh_nonlocal: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"{self.source}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}, "
                 f"left as initialized {len(self.missing)}"]
        if self.fresh_nonlocal:
            lines.append(f"  {len(self.fresh_nonlocal)} non-local blocks not in the checkpoint start at their "
                         f"initialization (the identity): {', '.join(self.fresh_nonlocal)}")
        lines += [f"  skipped {k}: {why}" for k, why in self.skipped.items()]
        lines += [f"  initialized {k}" for k in self.missing]
        return "\n".join(lines)


def _is_pytorchvideo(sd: Mapping[str, Any]) -> bool:
    return any(k.startswith("blocks.") and ".res_blocks." in k for k in sd)


def load_matching(model: nn.Module, checkpoint: str | os.PathLike | Mapping[str, Any], key: str = "init_from",
                  verbose: bool = True) -> LoadReport:
    """Load every tensor of ``checkpoint`` whose name and shape match ``model``; leave the rest as initialized.

    Args:
        model: a ``ResNet3d``.
        checkpoint: a path (gnvideo ``.ckpt``, state dict, pytorchvideo ``.pyth``, ``.safetensors``; read without
            running code) or an object as ``torch.load`` returns it.
        key: the setting that names the checkpoint, for messages.
        verbose: print the report (one summary line plus one line per skipped / re-initialized tensor).

    Returns:
        A ``LoadReport``. A classifier with another class count is skipped, so it keeps its fresh initialization.

    Raises:
        WeightsError: key ``key``: no tensor matches (another architecture), or a stem or stage tensor of the model
            is left out or has another shape in the file (the rule of the module docstring; names the first ones;
            the model may then hold part of the file's tensors); its subclass ``CheckpointError`` when the file
            cannot be read without running code.
    """
    is_path = isinstance(checkpoint, (str, os.PathLike))
    label = f"{key} ({checkpoint})" if is_path else key
    where = f"{checkpoint}: " if is_path else ""
    sd = unwrap_state_dict(read_checkpoint(checkpoint, key) if is_path else checkpoint, key)
    if _is_pytorchvideo(sd):
        from gnvideo.models.pytorchvideo_import import convert_pytorchvideo_state_dict

        try:
            sd = convert_pytorchvideo_state_dict(sd)
        except ValueError as e:
            raise WeightsError(key, f"{where}{e}") from e
        label += " [pytorchvideo]"
    target = model.state_dict()
    report = LoadReport(label)
    new: dict[str, torch.Tensor] = {}
    for name, value in sd.items():
        if name not in target:
            if not name.endswith("num_batches_tracked"):  # BN step counter; frozen_bn has none
                report.skipped[name] = "not in the model"
        elif target[name].shape != value.shape:
            what = "class count differs" if name.startswith("fc.") else "shape differs"
            report.skipped[name] = f"{what}: checkpoint {tuple(value.shape)}, model {tuple(target[name].shape)}"
        else:
            new[name] = value.to(target[name].dtype)
            report.loaded.append(name)
    if not new:
        raise WeightsError(key, f"{where}no tensor matches the model by name and shape (another architecture?); "
                                f"first checkpoint names: {list(sd)[:3]}")
    model.load_state_dict(new, strict=False)
    report.fresh_nonlocal, report.missing = fresh_nonlocal_blocks(
        model, [k for k in target if k not in new and not k.endswith("num_batches_tracked")])
    _require_backbone(key, where, report.loaded, report.missing,
                      [f"{k} {_dims(sd[k])} vs {_dims(target[k])}" for k, why in report.skipped.items()
                       if why.startswith("shape differs")], "have another shape in the model (file vs model)",
                      "fine-tuning loads every tensor of the stem and the stages: is it a checkpoint of the same "
                      "backbone and norm family?")
    if verbose:
        print(report)
    return report


def _is_classifier(name: str) -> bool:
    return name.removeprefix("module.").removeprefix("model.").startswith("fc.")


def _dims(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _first(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _require_backbone(key: str, where: str, loaded: list[str], missing: list[str], unfit: list[str],
                      unfit_what: str, rule: str) -> None:
    """Raise ``WeightsError`` unless every model tensor outside the classifier was loaded (``missing``: the model
    names left as initialized) and no tensor of the file outside the classifier was unfit (``unfit``, with
    ``unfit_what`` saying why); ``rule`` ends the message."""
    left = [k for k in missing if not _is_classifier(k) and not k.endswith("num_batches_tracked")]
    unfit = [k for k in unfit if not _is_classifier(k)]
    if not left and not unfit:
        return
    done = sum(not _is_classifier(k) and not k.endswith("num_batches_tracked") for k in loaded)
    parts = [f"initializes {done} of the model's {done + len(left)} tensors outside the classifier "
             f"(first left out: {_first(left)})"] if left else []
    parts += [f"{len(unfit)} of its tensors outside the classifier {unfit_what}: {_first(unfit)}"] if unfit else []
    raise WeightsError(key, f"{where}{'; '.join(parts)}; {rule}")


def check_init_options(norm: str, pretrained_2d: str | None = None, pretrained_2d_file: str | None = None,
                       init_from: str | None = None) -> None:
    """Check the weight options without loading their tensors (names, norm family, files exist and read safely).

    Raises:
        ConfigError: key ``pretrained_2d``, ``pretrained_2d_file`` or ``init_from`` (the caller prefixes it);
            ``CheckpointError`` for a file that is not a checkpoint, is damaged or would need a full unpickle.
    """
    if pretrained_2d_file and not pretrained_2d:
        raise ConfigError("pretrained_2d_file", "set pretrained_2d to the source the file holds "
                          f"({sorted(IMAGENET_SOURCES)})")
    if pretrained_2d in IMAGENET_SOURCES:
        try:
            check_source_family(pretrained_2d, norm)
        except ValueError as e:
            raise ConfigError("pretrained_2d", str(e)) from e
    elif pretrained_2d and not (Path(pretrained_2d).suffix or os.sep in pretrained_2d):
        raise ConfigError("pretrained_2d", f"{pretrained_2d!r} is neither an ImageNet source "
                          f"({sorted(IMAGENET_SOURCES)}) nor a file path")
    elif pretrained_2d:
        check_checkpoint(pretrained_2d, "pretrained_2d")
    for key, path in (("pretrained_2d_file", pretrained_2d_file), ("init_from", init_from)):
        if path:
            check_checkpoint(path, key)


def initialize(model: nn.Module, norm: str, pretrained_2d: str | None = None, pretrained_2d_file: str | None = None,
               inflate_mode: str = "mean", init_from: str | None = None, verbose: bool = True,
               prefix: str = "") -> None:
    """Load the initial weights of ``model`` as ``VideoClassifier`` configures them.

    Args:
        model: a ``ResNet3d`` built with norm kind ``norm``.
        norm: its norm kind (to check the ImageNet source's family).
        pretrained_2d: an ``IMAGENET_SOURCES`` name, or the path of a 2D ResNet state dict; inflated over time.
        pretrained_2d_file: a local copy of the named source's weights (used instead of the library's download).
        inflate_mode: "mean" or "center" (``inflate_2d_state_dict``).
        init_from: a checkpoint to fine-tune from, applied after the ImageNet weights (``load_matching``).
        verbose: print what was loaded and skipped.
        prefix: put before the setting names in the printed lines (``"model."`` from ``VideoClassifier``; raised
            errors carry the bare key, which the caller prefixes).

    Raises:
        ConfigError: a bad name or a missing file (``check_init_options``); ``WeightsError`` with key
            ``pretrained_2d``, ``pretrained_2d_file`` or ``init_from`` when the weights cannot be loaded or leave
            part of the model as initialized (``CheckpointError``: the file cannot be read safely;
            ``WeightsUnavailable``: ImageNet weights neither downloadable nor in a file).
    """
    check_init_options(norm, pretrained_2d, pretrained_2d_file, init_from)
    if pretrained_2d:
        _inflate_imagenet(model, pretrained_2d, pretrained_2d_file, inflate_mode, verbose, prefix)
    if init_from:
        report = load_matching(model, init_from, key="init_from", verbose=False)
        if verbose:
            report.source = prefix + report.source
            print(report)


def _inflate_imagenet(model: nn.Module, pretrained_2d: str, file: str | None, mode: str, verbose: bool,
                      prefix: str = "") -> None:
    from gnvideo.models.inflate import inflate_2d_state_dict

    key = "pretrained_2d_file" if file else "pretrained_2d"
    if pretrained_2d in IMAGENET_SOURCES:
        sd = imagenet_state_dict(pretrained_2d, file)
    else:
        sd = unwrap_state_dict(read_checkpoint(file or pretrained_2d, key), key)
    source = pretrained_2d + (f" (file {file})" if file else "")
    try:
        report = inflate_2d_state_dict(model, sd, mode=mode)
    except ValueError as e:
        raise WeightsError(key, f"{source}: {e}") from e
    _require_backbone(key, f"{source}: ", report.loaded, report.missing, list(report.skipped),
                      "have no place in the model", "outside the classifier, the model and the 2D weights must match "
                      "tensor for tensor: is it a 2D ResNet of the model's depth in torchvision / timm naming?")
    if verbose:
        n_fresh = len(report.fresh_nonlocal)
        fresh = f"; {n_fresh} non-local blocks at their initialization (the identity)" if n_fresh else ""
        print(f"{prefix}{key}: inflated {len(report.loaded)} tensors from {source} ({len(report.skipped)} skipped: "
              f"{', '.join(report.skipped) or 'none'}; {len(report.missing)} left as initialized{fresh})")


__all__ = [
    "IMAGENET_SOURCES",
    "ImageNetSource",
    "LoadReport",
    "WeightsError",
    "input_statistics",
    "WeightsUnavailable",
    "check_init_options",
    "check_source_family",
    "imagenet_state_dict",
    "initialize",
    "load_matching",
    "unwrap_state_dict",
]
