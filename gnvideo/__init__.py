"""gnvideo: video classification with 3D CNNs and pluggable normalization.

Layers, lowest first: ``gnvideo.ops`` (GroupNorm op) -> ``gnvideo.models`` -> ``gnvideo.data`` ->
``gnvideo.module`` / ``gnvideo.cli``. Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
