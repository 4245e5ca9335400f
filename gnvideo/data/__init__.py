"""Video data pipeline: decoding and encoding (:mod:`.decode`, the only place that touches FFmpeg), the Kinetics
on-disk format (:mod:`.layout`), clip samplers, transforms, Kinetics datasets, the synthetic dataset, DataModule, and
how cheap a dataset's videos are to read at random clip positions (:mod:`.random_access`).

Importing ``gnvideo.data`` imports nothing heavy (no torch, no Lightning): each public name below is loaded from its
module on first access, so the data tools and ``gnvideo.data.layout`` start fast.
"""

from importlib import import_module

#: public name -> the submodule that defines it (imported on first use, so importing this package stays light)
_EXPORTS = {
    "VideoEntry": ".annotations",
    "load_label_names": ".annotations",
    "read_annotations": ".annotations",
    "read_exclude_list": ".annotations",
    "VideoDecodeError": ".decode",
    "VideoReader": ".decode",
    "open_video": ".decode",
    "video_problem": ".decode",
    "ClipDataset": ".kinetics",
    "KineticsDataset": ".kinetics",
    "VideoFilesDataset": ".kinetics",
    "collate_views": ".collate",
    "views_of": ".collate",
    "EpochDistributedSampler": ".sampling",
    "ResumableDataLoader": ".sampling",
    "UnpaddedDistributedSampler": ".sampling",
    "eval_clip_indices": ".sampling",
    "sample_generator": ".sampling",
    "train_clip_indices": ".sampling",
    "IMAGENET_MEAN": ".transforms",
    "IMAGENET_STD": ".transforms",
    "BatchTransform": ".transforms",
    "EvalTransform": ".transforms",
    "TrainTransform": ".transforms",
    "cut_views": ".transforms",
    "KineticsDataModule": ".datamodule",
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
