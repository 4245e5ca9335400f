"""Video data pipeline: the Kinetics on-disk format (:mod:`.layout`), readers (decord, PyAV fallback) and the one video
writer (:mod:`.video_writer`), clip samplers, transforms, Kinetics datasets, DataModule.

Importing ``gnvideo.data`` does not import Lightning; ``KineticsDataModule`` is loaded on first access.
"""

from .annotations import VideoEntry, load_label_names, read_annotations, read_exclude_list
from .kinetics import ClipDataset, KineticsDataset, VideoFilesDataset, collate_views
from .readers import VideoReader, open_video
from .sampling import (
    EpochDistributedSampler,
    ResumableDataLoader,
    UnpaddedDistributedSampler,
    eval_clip_indices,
    sample_generator,
    train_clip_indices,
)
from .transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, EvalTransform, TrainTransform
from .validation import VideoDecodeError, video_problem


def __getattr__(name: str):
    if name == "KineticsDataModule":
        from .datamodule import KineticsDataModule

        return KineticsDataModule
    raise AttributeError(f"module 'gnvideo.data' has no attribute {name!r}")


__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchTransform",
    "ClipDataset",
    "EpochDistributedSampler",
    "EvalTransform",
    "KineticsDataModule",
    "KineticsDataset",
    "ResumableDataLoader",
    "TrainTransform",
    "UnpaddedDistributedSampler",
    "VideoDecodeError",
    "VideoEntry",
    "VideoFilesDataset",
    "VideoReader",
    "eval_clip_indices",
    "load_label_names",
    "open_video",
    "read_annotations",
    "read_exclude_list",
    "sample_generator",
    "train_clip_indices",
    "collate_views",
    "video_problem",
]
