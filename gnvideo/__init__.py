"""gnvideo: video classification with 3D CNNs and pluggable normalization.

Layers, lowest first (a lower one never imports a higher one; ``tests/test_layers.py`` checks it):
``gnvideo.errors`` -> ``gnvideo.ops`` (GroupNorm op) -> ``gnvideo.models`` -> ``gnvideo.data.decode`` (FFmpeg) ->
``gnvideo.data`` -> ``gnvideo.evaluation`` / ``gnvideo.results`` (video-level scores, the result schema) ->
``gnvideo.training`` (LightningModule, callbacks, LightningCLI) -> ``gnvideo.report`` -> ``gnvideo.demo`` ->
``gnvideo.cli``. Importing this package imports nothing heavy.
"""

__version__ = "0.1.0"
