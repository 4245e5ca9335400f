"""3D ResNets for video classification with pluggable normalization.

Public API: ``build_norm``, ``NORM_KINDS``, ``build_model``, ``PRESETS``, ``ResNet3d``, ``weights`` (ImageNet,
init_from), ``inflate_2d_state_dict``, ``load_pytorchvideo_checkpoint``.
"""

from gnvideo.models.inflate import InflationReport, inflate_2d_state_dict
from gnvideo.models.norm_layers import (
    BatchGroupNorm3d,
    FrozenBatchNorm3d,
    GroupNorm3d,
    InstanceNorm3d,
    LayerNorm3d,
    SubBatchNorm3d,
)
from gnvideo.models.norms import NORM_KINDS, build_norm, norm_factory
from gnvideo.models.presets import PRESETS, build_model
from gnvideo.models.pytorchvideo_import import convert_pytorchvideo_state_dict, load_pytorchvideo_checkpoint
from gnvideo.models.resnet3d import ResNet3d

__all__ = [
    "NORM_KINDS",
    "PRESETS",
    "BatchGroupNorm3d",
    "FrozenBatchNorm3d",
    "GroupNorm3d",
    "InflationReport",
    "InstanceNorm3d",
    "LayerNorm3d",
    "ResNet3d",
    "SubBatchNorm3d",
    "build_model",
    "build_norm",
    "convert_pytorchvideo_state_dict",
    "inflate_2d_state_dict",
    "load_pytorchvideo_checkpoint",
    "norm_factory",
]
