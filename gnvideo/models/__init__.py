"""3D ResNets for video classification with pluggable normalization.

Public API: ``build_norm``, ``NORM_KINDS``, ``build_model``, ``PRESETS``, ``ResNet3d``, ``weights`` (ImageNet,
init_from), ``checkpoint_io`` (every checkpoint file read without running code), ``inflate_2d_state_dict``,
``load_pytorchvideo_checkpoint``.
"""

from importlib import import_module

#: public name -> the submodule that defines it (imported on first use, so importing this package stays light)
_EXPORTS = {
    "InflationReport": ".inflate",
    "inflate_2d_state_dict": ".inflate",
    "BatchGroupNorm3d": ".norm_layers",
    "FrozenBatchNorm3d": ".norm_layers",
    "GroupNorm3d": ".norm_layers",
    "InstanceNorm3d": ".norm_layers",
    "LayerNorm3d": ".norm_layers",
    "SubBatchNorm3d": ".norm_layers",
    "NORM_KINDS": ".norms",
    "build_norm": ".norms",
    "norm_factory": ".norms",
    "PRESETS": ".presets",
    "build_model": ".presets",
    "convert_pytorchvideo_state_dict": ".pytorchvideo_import",
    "load_pytorchvideo_checkpoint": ".pytorchvideo_import",
    "ResNet3d": ".resnet3d",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
