"""Import pytorchvideo model-zoo ResNet checkpoints (``create_resnet`` naming) into our presets.

pytorchvideo ``i3d_r50`` (8x8) loads into ``build_model("i3d_r50_pytorchvideo")`` and ``slow_r50`` into
``build_model("slow_r50")``. Key mapping (the stage block indices are found from the keys, since ``i3d_r50`` has a
pooling block between stage 1 and stage 2)::

    blocks.0.conv / blocks.0.norm                         -> conv1 / norm1
    blocks.S.res_blocks.K.branch1_conv / branch1_norm     -> layerX.K.downsample.0 / downsample.1
    blocks.S.res_blocks.K.branch2.conv_a / norm_a (b, c)  -> layerX.K.conv1 / norm1 (2, 3)
    blocks.H.proj                                         -> fc
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from gnvideo.models.checkpoint_io import read_checkpoint

_BLOCK_PARTS = {
    "branch1_conv": "downsample.0",
    "branch1_norm": "downsample.1",
    "branch2.conv_a": "conv1",
    "branch2.norm_a": "norm1",
    "branch2.conv_b": "conv2",
    "branch2.norm_b": "norm2",
    "branch2.conv_c": "conv3",
    "branch2.norm_c": "norm3",
}
_STAGE = re.compile(r"^blocks\.(\d+)\.res_blocks\.(\d+)\.(.+)\.(\w+)$")
_STEM = re.compile(r"^blocks\.0\.(conv|norm)\.(\w+)$")
_HEAD = re.compile(r"^blocks\.(\d+)\.proj\.(weight|bias)$")


def convert_pytorchvideo_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Rename a pytorchvideo ResNet state dict to ``ResNet3d`` names.

    Args:
        state_dict: the model's state dict, or a model-zoo checkpoint dict holding it under ``model_state``.

    Returns:
        A new state dict with our key names (same tensors).

    Raises:
        ValueError: a key that is not part of a pytorchvideo ResNet (names the key).
    """
    if "model_state" in state_dict:
        state_dict = state_dict["model_state"]
    stage_ids = sorted({int(m.group(1)) for k in state_dict if (m := _STAGE.match(k))})
    if not stage_ids:
        raise ValueError("state dict has no 'blocks.S.res_blocks.K' keys: not a pytorchvideo ResNet")
    stage_of = {s: i + 1 for i, s in enumerate(stage_ids)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if m := _STEM.match(key):
            out[f"{m.group(1)}1.{m.group(2)}"] = value
        elif m := _STAGE.match(key):
            part = _BLOCK_PARTS.get(m.group(3))
            if part is None:
                raise ValueError(f"unexpected pytorchvideo key {key!r} (unknown block part {m.group(3)!r})")
            out[f"layer{stage_of[int(m.group(1))]}.{m.group(2)}.{part}.{m.group(4)}"] = value
        elif m := _HEAD.match(key):
            out[f"fc.{m.group(2)}"] = value
        else:
            raise ValueError(f"unexpected pytorchvideo key {key!r}")
    return out


def load_pytorchvideo_checkpoint(
    model: nn.Module, state_dict: Mapping[str, Any] | str | os.PathLike, strict: bool = True
) -> Any:
    """Load a pytorchvideo ResNet checkpoint into ``model``.

    Args:
        model: ``build_model("i3d_r50_pytorchvideo")`` or ``build_model("slow_r50")`` with a BN-family norm.
        state_dict: a state dict, a model-zoo checkpoint dict (``model_state``), or a path to a ``.pyth`` file
            (read with ``gnvideo.models.checkpoint_io.read_checkpoint``: tensors and plain types only).
        strict: passed to ``load_state_dict``.

    Returns:
        The ``load_state_dict`` result (missing and unexpected keys).

    Raises:
        CheckpointError: the file is missing or cannot be read without running code (key ``state_dict``).
        ValueError: unknown keys or shapes that do not match the model (names the key).
    """
    if isinstance(state_dict, (str, os.PathLike)):
        state_dict = read_checkpoint(state_dict, "state_dict")
    converted = convert_pytorchvideo_state_dict(state_dict)
    target = model.state_dict()
    for key, value in converted.items():
        if key in target and target[key].shape != value.shape:
            raise ValueError(
                f"pytorchvideo tensor {key!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target[key].shape)}: use the matching preset (i3d_r50_pytorchvideo or slow_r50)"
            )
    return model.load_state_dict(converted, strict=strict)
