"""Lightning callbacks of a gnvideo run, one job per module: :mod:`.throughput` (clips/s and LR logging),
:mod:`.precise_bn` (BN statistics before validation), :mod:`.records` (result and prediction files),
:mod:`.kernel_setup` (the CUDA GroupNorm build)."""

from .kernel_setup import GroupNormKernelSetup
from .precise_bn import PreciseBN, batch_norm_layers, update_bn_stats
from .records import PredictionWriter, RunRecorder
from .throughput import ClipThroughput, LRMonitor

__all__ = ["ClipThroughput", "GroupNormKernelSetup", "LRMonitor", "PredictionWriter", "PreciseBN", "RunRecorder",
           "batch_norm_layers", "update_bn_stats"]
