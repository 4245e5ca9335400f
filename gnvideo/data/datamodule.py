"""LightningDataModule for Kinetics-style datasets (official CSV or ``path label`` lists).

Samplers: train uses :class:`EpochDistributedSampler` (shuffled, sharded over ranks, padded like torch's
``DistributedSampler``; its ``set_epoch``, called by Lightning each epoch, also reseeds clip sampling). val/test/predict
use :class:`UnpaddedDistributedSampler`, so in DDP every view is evaluated exactly once across ranks. Lightning keeps
both because they already are ``DistributedSampler`` instances. The train loader is a :class:`ResumableDataLoader`:
Lightning saves its position in the epoch with each checkpoint, so ``fit --ckpt_path`` continues mid-epoch exactly.

Broken videos: each split's dataset adds the videos it finds broken to the run folder's ``broken_videos.txt``
(:class:`~gnvideo.data.broken_list.BrokenVideoList`, attached in :meth:`KineticsDataModule.setup` once a trainer is
attached). In a fit the list also travels in every checkpoint (:meth:`~KineticsDataModule.state_dict`), and the
videos it names are broken from the start, so a resumed fit, in its folder or from a checkpoint elsewhere, never opens
them again. validate/test/predict decode every video of their own (each names its broken videos in its own run
folder). Decoding runs in a child process of each loading process (``decode_sandbox``), so a decoder crash or hang
costs one video (see :mod:`gnvideo.data.kinetics`). The DataModule's part of this bookkeeping:
:mod:`gnvideo.data.broken_bookkeeping`.
"""

from __future__ import annotations

import logging
import os

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from gnvideo.errors import ConfigError, config_prefix

from .annotations import load_label_names
from .broken_bookkeeping import BrokenVideoBookkeeping
from .collate import collate_views
from .decode import sandbox_available
from .kinetics import DECODE_TIMEOUT, ClipDataset, KineticsDataset, VideoFilesDataset
from .random_access import sample_keyframe_facts, warning_for
from .sampling import EpochDistributedSampler, ForkSafeDataLoader, ResumableDataLoader, UnpaddedDistributedSampler
from .transforms import BatchTransform, EvalTransform, TrainTransform, resolve_mean_std

logger = logging.getLogger(__name__)


def labels_from_checkpoint(path: str) -> tuple[str | None, int | None]:
    """(class-name file the checkpoint's run used, if it still exists; number of classes), for predicting without
    the dataset. Reads only the checkpoint's hyper-parameters (tensors memory-mapped), without running code.

    Raises:
        CheckpointError: key ``ckpt_path``, the file cannot be read safely (``gnvideo.models.checkpoint_io``).
    """
    from gnvideo.models.checkpoint_io import read_checkpoint

    ckpt = read_checkpoint(path, "ckpt_path", mmap=True)
    ckpt = ckpt if isinstance(ckpt, dict) else {}
    num_classes = (ckpt.get("hyper_parameters") or {}).get("num_classes")
    data = ckpt.get("datamodule_hyper_parameters") or {}
    for candidate in (data.get("labels"), os.path.join(str(data.get("root") or ""), "labels.txt")):
        if candidate and os.path.isfile(candidate):
            return os.path.abspath(candidate), num_classes
    return None, num_classes


def _transform(split: str, cls: type, **options):
    """``cls(**options)``; a bad value raises :class:`ConfigError` with the option's key (``<split>_<name>``)."""
    with config_prefix(f"{split}_"):
        return cls(**options)


class KineticsDataModule(BrokenVideoBookkeeping, pl.LightningDataModule):
    """Kinetics train/val/test/predict data.

    Option names: a split prefix (``train_``, ``val_``, ``test_``) and the name of the :class:`TrainTransform` or
    :class:`EvalTransform` argument it sets (``train_crop_size`` -> ``TrainTransform(crop_size=...)``); the DataModule
    builds one transform per split and hands it to that split's dataset, so each value is passed once. ``predict``
    uses the ``test_*`` views.

    Args:
        root: dataset root (videos under ``root/{train,val}/...``).
        train_annotation: train CSV or list; default ``{root}/annotations/train.csv``.
        val_annotation: val CSV or list; default ``{root}/annotations/val.csv``.
        test_annotation: test CSV or list; default = the val annotation (videos under ``root/val``).
        labels: class-name file; default ``{root}/labels.txt`` if it exists, else the packaged Kinetics-400 list.
        clips_per_device: batch size per device in clips; in test / predict, whole videos are loaded (all views of a
            video from one decoder) and a batch holds ``max(1, clips_per_device // views)`` videos, whose views the
            model runs ``clips_per_device`` at a time.
        num_workers: DataLoader worker processes per device.
        num_frames: frames per clip (T).
        sampling_rate: stride between clip frames, in video frames.
        train_short_side_range: (min, max) short side of a training clip, drawn uniformly per clip (pixels).
        train_crop_size: side of the random square training crop (pixels).
        train_flip_prob: probability of a horizontal flip of a training clip (0 for direction-dependent classes, such
            as the synthetic dataset's moving left/right and rotating clockwise/counter-clockwise). Drawn per clip in
            the worker from the clip's seed, applied on the device.
        train_upscale_on_device: a training crop that needs enlarging leaves the worker at source resolution and is
            enlarged by the ``batch_transform`` on the device (``TrainTransform(upscale_on_device=...)``): the
            worker then only decodes and crops. None = on when the trainer runs on an accelerator; on a CPU the
            workers' uint8 resize is the cheaper place (see README, "Data loading").
        val_short_side: validation short side (pixels); validation takes the centre clip and centre crop.
        val_crop_size: validation crop side (pixels).
        test_short_side: test / predict short side (pixels).
        test_crop_size: test / predict crop side (pixels).
        test_num_clips: clips per video in test / predict.
        test_num_crops: crops per clip in test / predict (1 or 3).
        test_views_on_device: a test / predict item holds its video's frames once and where its views lie in them,
            and the ``batch_transform`` cuts the views on the device (``EvalTransform(views_on_device=...)``): the
            worker copies each frame once instead of writing every view (about a third of the bytes for 10 x 3
            views). None = on when the trainer runs on an accelerator; on a CPU the training process is the device,
            and the workers are the cheaper place (see README, "Data loading").
        pin_memory: DataLoader pin_memory.
        persistent_workers: keep workers between epochs (only used when num_workers > 0).
        decode_backend: "auto", "decord" or "pyav".
        decode_short_side: scale frames to this short side (pixels) while decoding, before the split's transform
            (saves memory and resize work on large source videos); None = decode at the file's size.
        decode_sandbox: decode in a child process of each loading process (DataLoader worker, or the main process
            with 0 workers), so a decoder that crashes or hangs costs that video only (named once, with its reason, and
            listed in the run's ``broken_videos.txt``); false decodes in the loading process, where a decoder crash
            ends the run and a hang stops it (warned at the start). See README, "Broken videos", for its cost.
        decode_timeout: seconds a decoder may take to open a video or read one clip's frames (a test video's views:
            one read) before the video is named hung ("decoder hung: no frames after N s") and its decoder killed.
        exclude_list: file of video paths to leave out (one per line).
        predict_files: videos for ``predict``: a list of files, or one folder (searched recursively), video file or
            text file listing videos (one per line, relative to the list's folder; use it for names with commas).
            ``root`` need not exist for predict (only the class names are used).
        seed: seed for train shuffling and clip sampling.
        mean_std: input normalization preset of the weight source (``transforms.MEAN_STD_PRESETS``): "imagenet"
            (torchvision / timm 2D weights), "pytorchvideo" (0.45 / 0.225: pytorchvideo, PySlowFast, Non-local),
            "torchvision_video". The resolved values are stored as the hyperparameters ``mean`` and ``std``.
        mean: per-channel RGB mean in [0, 1] units, replacing the preset's.
        std: per-channel RGB std in [0, 1] units, replacing the preset's.
        holdout_fraction: fraction of the training videos (a fixed draw from ``seed``) held out of training and used
            as the validation split, so that checkpoint choice (``best``) never looks at the scored set. 0 validates
            on ``val_annotation``, which is also the default test set.
        test_view: "crops" (``test_num_crops`` square crops of ``test_crop_size`` per clip) or "full_frame" (the
            Non-local paper's fully convolutional test: each clip's whole frame at ``test_short_side``, one view per
            clip; frames of different videos differ in width, so a test batch is one video (its clips)).
        keyframe_check_files: training videos whose keyframe intervals ``fit`` reads from their headers when it
            makes its train loader (no decoding; in an isolated worker with ``decode_sandbox``); when those lie far
            above the clip span, one warning names the command that re-encodes the dataset for fast random clip
            reads (:mod:`gnvideo.data.random_access`). 0 skips the check.
    """

    def __init__(
        self,
        root: str,
        train_annotation: str | None = None,
        val_annotation: str | None = None,
        test_annotation: str | None = None,
        labels: str | None = None,
        clips_per_device: int = 8,
        num_workers: int = 4,
        num_frames: int = 32,
        sampling_rate: int = 2,
        train_short_side_range: tuple[int, int] = (256, 320),
        train_crop_size: int = 224,
        train_flip_prob: float = 0.5,
        train_upscale_on_device: bool | None = None,
        val_short_side: int = 256,
        val_crop_size: int = 224,
        test_short_side: int = 256,
        test_crop_size: int = 224,
        test_num_clips: int = 10,
        test_num_crops: int = 3,
        test_views_on_device: bool | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        decode_backend: str = "auto",
        decode_short_side: int | None = None,
        decode_sandbox: bool = True,
        decode_timeout: float = DECODE_TIMEOUT,
        exclude_list: str | None = None,
        predict_files: str | list[str] | None = None,
        seed: int = 0,
        mean_std: str | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        holdout_fraction: float = 0.0,
        test_view: str = "crops",
        keyframe_check_files: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        with config_prefix("data."):  # the settings checked here have the keys data.<name>
            # the resolved values are recorded as the run's settings
            self.hparams.mean, self.hparams.std = resolve_mean_std(mean_std, mean, std)
            #: uint8 batches -> normalised float32 on the device; ``VideoClassifier.on_after_batch_transfer`` calls it
            self.batch_transform = BatchTransform(self.hparams.mean, self.hparams.std)
            self._build_transforms()
            if not 0.0 <= holdout_fraction < 1.0:
                raise ConfigError("holdout_fraction", f"must be in [0, 1), got {holdout_fraction}")
            if not decode_timeout > 0:
                raise ConfigError("decode_timeout", f"must be a positive number of seconds, got {decode_timeout}")
        self.root = os.fspath(root)
        if labels is None and os.path.isfile(os.path.join(self.root, "labels.txt")):
            labels = os.path.join(self.root, "labels.txt")
        self.labels_file = labels
        self.label_names = load_label_names(labels)
        ann = os.path.join(self.root, "annotations")
        self.train_annotation = train_annotation or os.path.join(ann, "train.csv")
        self.val_annotation = val_annotation or os.path.join(ann, "val.csv")
        self.test_annotation = test_annotation or self.val_annotation
        self.test_split = "test" if test_annotation else "val"
        self.train_dataset: KineticsDataset | None = None
        self.val_dataset: KineticsDataset | None = None
        self.test_dataset: KineticsDataset | None = None
        self.predict_dataset: VideoFilesDataset | None = None
        self._keyframes_checked = False
        self.broken_list = None  # the run folder's list, once a trainer is attached (BrokenVideoBookkeeping)

    def _build_transforms(self) -> None:
        """One transform per split from that split's options (each dataset gets its split's object as it is)."""
        h = self.hparams
        if h.test_view not in ("crops", "full_frame"):
            raise ConfigError("test_view", f"must be 'crops' or 'full_frame', got {h.test_view!r}")
        self.train_transform = _transform("train", TrainTransform, short_side_range=h.train_short_side_range,
                                          crop_size=h.train_crop_size, flip_prob=h.train_flip_prob,
                                          upscale_on_device=bool(h.train_upscale_on_device))
        self.val_transform = _transform("val", EvalTransform, short_side=h.val_short_side, crop_size=h.val_crop_size)
        full_frame = h.test_view == "full_frame"
        self.test_transform = _transform("test", EvalTransform, short_side=h.test_short_side,
                                         crop_size=h.test_crop_size, num_crops=1 if full_frame else h.test_num_crops,
                                         full_frame=full_frame, views_on_device=bool(h.test_views_on_device))

    @property
    def clips_per_device(self) -> int:
        """Clips per device per batch (``data.clips_per_device``; the DataLoader's ``batch_size`` in train/val)."""
        return int(self.hparams.clips_per_device)

    @property
    def num_classes(self) -> int:
        """Number of classes (from the labels list; valid right after construction)."""
        return len(self.label_names)

    # -- datasets ----------------------------------------------------------------------------------------------
    def _common(self) -> dict:
        """Dataset options that are the same for every split."""
        h = self.hparams
        return dict(num_frames=h.num_frames, sampling_rate=h.sampling_rate, backend=h.decode_backend,
                    decode_short_side=h.decode_short_side, seed=h.seed, decode_sandbox=h.decode_sandbox,
                    decode_timeout=h.decode_timeout)

    def _split_options(self, mode: str) -> dict:
        """The transform (and in test mode the clip count) of the dataset of ``mode``."""
        if mode == "train":
            return dict(transform=self.train_transform)
        if mode == "val":
            return dict(transform=self.val_transform)
        return dict(transform=self.test_transform, num_clips=self.hparams.test_num_clips)

    def _dataset(self, annotation: str, split: str, mode: str) -> KineticsDataset:
        h = self.hparams
        key = f"{'train' if mode == 'train' else 'val' if mode == 'val' else 'test'}_annotation"
        if not os.path.isfile(annotation):
            given = getattr(h, key) is not None or (key == "test_annotation" and h.val_annotation)
            where = "" if given else f" (the default under data.root; set data.{key})"
            raise ConfigError(key, f"annotation file not found: {annotation}{where}")
        if h.exclude_list is not None and not os.path.isfile(h.exclude_list):
            raise ConfigError("exclude_list", f"file not found: {h.exclude_list}")
        try:
            return KineticsDataset(annotation, self.root, split=split, mode=mode, label_names=self.label_names,
                                   exclude_list=h.exclude_list, **self._split_options(mode), **self._common())
        except (ValueError, FileNotFoundError) as err:  # malformed row, unknown label: file:line in the message
            raise ConfigError(key, str(err)) from err

    @config_prefix("data.")
    def _check_batches(self, replicas: int = 1) -> None:
        """Raise when the train split gives no batch of ``clips_per_device`` on each of ``replicas`` devices."""
        ds = self.train_dataset
        if ds is None:
            return
        usable = ds.num_videos - ds.num_missing  # both counted on the training part, after any holdout
        batch, replicas = self.clips_per_device, max(int(replicas), 1)
        per_device = -(-ds.num_videos // replicas)  # the train sampler pads to equal shares, batches drop the rest
        held = len(self.val_dataset) if self.val_dataset is not None and self.hparams.holdout_fraction > 0 else 0
        where = (f"{ds.num_videos + held} listed in {ds.annotation}" + (f", {held} held out for validation" if held
                 else "") + f", {ds.num_missing} of the {ds.num_videos} training videos missing")
        if per_device < batch:
            devices = f" on each of {replicas} devices" if replicas > 1 else ""
            raise ConfigError("clips_per_device", f"the train split has {usable} usable videos ({where}), "
                              f"fewer than one batch of {batch} clips{devices}: 0 batches per epoch")
        if usable == 0:
            raise ConfigError("train_annotation", f"the train split has 0 usable videos ({where})")

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets for ``stage`` ("fit", "validate", "test", "predict"; None = all with annotations).

        Raises:
            ConfigError: a missing or malformed annotation, root, exclude list or predict input, or a train split
                with no full batch; the key is ``data.<option>``.
        """
        with config_prefix("data."):
            self._setup(stage)
        if stage in ("fit", None):
            self._check_batches()  # after the holdout took its share
        self._attach_broken_list(stage)

    def _check_keyframes(self) -> None:
        """Warn once (global rank 0) when sampled training videos have keyframes far apart; never raises. With the
        decode sandbox the headers are read in an isolated worker, and a file whose read crashes or hangs it is a
        broken training video of the run like any other (named once, listed, never opened again)."""
        trainer = getattr(self, "trainer", None)
        count = int(self.hparams.keyframe_check_files)
        if self._keyframes_checked or self.train_dataset is None or count <= 0:
            return
        self._keyframes_checked = True
        if trainer is not None and not getattr(trainer, "is_global_zero", True):
            return
        h = self.hparams
        isolated = h.decode_sandbox and sandbox_available()  # a crashing file must not end the run here either
        try:
            facts, failed = sample_keyframe_facts(
                [e.path for e in self.train_dataset.entries if not self.train_dataset.is_broken(e.path)],
                h.num_frames, h.sampling_rate, count=count, seed=h.seed,
                timeout=float(h.decode_timeout) if isolated else None)
        except Exception as err:  # noqa: BLE001 - advice only: a failed check never stops a run
            logger.debug("keyframe check skipped: %s", err)
            return
        for path, reason in failed.items():
            self.train_dataset.report_broken(path, reason)
        warning = warning_for(facts, h.num_frames, h.sampling_rate, self.root)
        if warning:
            logger.warning("data: %s", warning)

    def _setup(self, stage: str | None) -> None:
        if stage != "predict" and not os.path.isdir(self.root):
            raise ConfigError("root", f"dataset folder not found: {self.root}")
        trainer = getattr(self, "trainer", None)
        on_accelerator = trainer is not None and trainer.strategy.root_device.type != "cpu"
        if self.hparams.train_upscale_on_device is None:
            self.train_transform.upscale_on_device = on_accelerator
        if self.hparams.test_views_on_device is None:
            self.test_transform.views_on_device = on_accelerator
        if stage in ("fit", None) and self.train_dataset is None:
            if stage == "fit" or os.path.isfile(self.train_annotation):
                self.train_dataset = self._dataset(self.train_annotation, "train", "train")
        if stage in ("fit", "validate", None) and self.val_dataset is None and self.hparams.holdout_fraction > 0:
            self.val_dataset = self._holdout()
        if stage in ("fit", "validate", None) and self.val_dataset is None:
            if stage is not None or os.path.isfile(self.val_annotation):
                self.val_dataset = self._dataset(self.val_annotation, "val", "val")
        if stage in ("test", None) and self.test_dataset is None:
            if stage == "test" or os.path.isfile(self.test_annotation):
                self.test_dataset = self._dataset(self.test_annotation, self.test_split, "test")
        if stage == "predict" and self.predict_dataset is None:
            if self.hparams.predict_files is None:
                raise ConfigError("predict_files", "not set: give a folder, a video or a list file")
            try:
                self.predict_dataset = VideoFilesDataset(
                    self.hparams.predict_files, mode="test", label_names=self.label_names,
                    **self._split_options("test"), **self._common())
            except (ValueError, FileNotFoundError) as err:
                raise ConfigError("predict_files", str(err)) from err

    def _holdout(self) -> ClipDataset:
        """Split a seeded random ``holdout_fraction`` of the training videos off into a validation dataset; the
        train dataset becomes the rest (each part with its own failure and missing-file counts)."""
        full = self.train_dataset or self._dataset(self.train_annotation, "train", "train")
        n = len(full.entries)
        k = max(1, round(self.hparams.holdout_fraction * n))
        if k >= n:
            raise ConfigError("holdout_fraction", f"{self.hparams.holdout_fraction} of {n} training videos leaves "
                              "none to train on")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        held = set(order[:k])
        self.train_dataset = full.with_entries([i for i in range(n) if i not in held])
        return ClipDataset([full.entries[i] for i in sorted(held)], mode="val", label_names=self.label_names,
                           **self._split_options("val"), **self._common())

    # -- loaders -----------------------------------------------------------------------------------------------
    def _replicas(self) -> tuple[int, int]:
        """(num_replicas, rank) from the attached trainer, else torch.distributed, else (1, 0)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            kwargs = trainer.distributed_sampler_kwargs or {}
            return int(kwargs.get("num_replicas", 1)), int(kwargs.get("rank", 0))
        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size(), dist.get_rank()
        return 1, 0

    def _loader(self, dataset: Dataset | None, name: str, train: bool = False, batch_size: int | None = None,
                collate_fn=None) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{name} dataset is not set up: call setup() with the matching stage first")
        h = self.hparams
        replicas, rank = self._replicas()
        if train:
            sampler = EpochDistributedSampler(dataset, replicas, rank, shuffle=True, seed=h.seed)
        else:
            sampler = UnpaddedDistributedSampler(dataset, replicas, rank)
        workers = int(h.num_workers)
        if train:  # Lightning saves its position: exact mid-epoch resume
            cls, extra = ResumableDataLoader, {"seed": h.seed}
        else:
            cls, extra = ForkSafeDataLoader, {}
        return cls(dataset, batch_size=batch_size or self.clips_per_device, sampler=sampler, num_workers=workers,
                   pin_memory=h.pin_memory, drop_last=train, collate_fn=collate_fn,
                   persistent_workers=bool(h.persistent_workers and workers > 0), **extra)

    def train_dataloader(self) -> DataLoader:
        self._check_batches(self._replicas()[0])
        self._check_keyframes()  # once, as the fit starts reading: the run's broken list is attached by then
        return self._loader(self.train_dataset, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val")

    def _videos_per_batch(self, dataset: ClipDataset | None) -> int:
        views = dataset.views_per_video if dataset is not None else 1
        return max(1, self.clips_per_device // views)

    def test_dataloader(self) -> DataLoader:
        """Batches of whole videos: their frames and where their views lie (:func:`collate_views`; the model cuts
        the views on its device); full frames: one video per batch (frame widths differ between videos)."""
        full_frame = self.hparams.test_view == "full_frame"
        batch = 1 if full_frame else self._videos_per_batch(self.test_dataset)
        return self._loader(self.test_dataset, "test", batch_size=batch, collate_fn=collate_views)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset, "predict", batch_size=self._videos_per_batch(self.predict_dataset),
                            collate_fn=collate_views)


__all__ = ["KineticsDataModule", "labels_from_checkpoint"]
