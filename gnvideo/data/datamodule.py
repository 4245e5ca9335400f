"""LightningDataModule for Kinetics-style datasets (official CSV or ``path label`` lists).

Samplers: train uses :class:`EpochDistributedSampler` (shuffled, sharded over ranks, padded like torch's
``DistributedSampler``; its ``set_epoch``, called by Lightning each epoch, also reseeds clip sampling). val/test/predict
use :class:`UnpaddedDistributedSampler`, so in DDP every view is evaluated exactly once across ranks. Lightning keeps
both because they already are ``DistributedSampler`` instances.
"""

from __future__ import annotations

import os

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from .annotations import load_label_names
from .kinetics import KineticsDataset, VideoFilesDataset
from .sampling import EpochDistributedSampler, ResumableDataLoader, UnpaddedDistributedSampler


class KineticsDataModule(pl.LightningDataModule):
    """Kinetics train/val/test/predict data.

    Args:
        root: dataset root (videos under ``root/{train,val}/...``).
        train_annotation: train CSV or list; default ``{root}/annotations/train.csv``.
        val_annotation: val CSV or list; default ``{root}/annotations/val.csv``.
        test_annotation: test CSV or list; default = the val annotation (videos under ``root/val``).
        labels: class-name file; default ``{root}/labels.txt`` if it exists, else the packaged Kinetics-400 list.
        clips_per_device: batch size per device (clips, or views in test).
        num_workers: DataLoader worker processes per device.
        num_frames: frames per clip (T).
        sampling_rate: stride between clip frames, in video frames.
        train_short_side: (min, max) random short side for training, pixels.
        crop_size: train crop side; also the val crop side (pixels).
        test_short_side: val/test short side, pixels.
        test_crop_size: test crop side, pixels.
        test_num_clips: clips per video in test.
        test_num_crops: crops per clip in test (1 or 3).
        hflip_prob: probability of a horizontal flip of a training clip (0 for direction-dependent classes, such as
            the synthetic dataset's moving left/right and rotating clockwise/counter-clockwise).
        pin_memory: DataLoader pin_memory.
        persistent_workers: keep workers between epochs (only used when num_workers > 0).
        decode_backend: "auto", "decord" or "pyav".
        exclude_list: file of video paths to leave out (one per line).
        predict_files: videos for ``predict``: a list of files, or one folder, video file or text file listing videos.
        seed: seed for train shuffling and clip sampling.
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
        train_short_side: tuple[int, int] = (256, 320),
        crop_size: int = 224,
        test_short_side: int = 256,
        test_crop_size: int = 224,
        test_num_clips: int = 10,
        test_num_crops: int = 3,
        hflip_prob: float = 0.5,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        decode_backend: str = "auto",
        exclude_list: str | None = None,
        predict_files: str | list[str] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
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

    @property
    def num_classes(self) -> int:
        """Number of classes (from the labels list; valid right after construction)."""
        return len(self.label_names)

    # -- datasets ----------------------------------------------------------------------------------------------
    def _common(self) -> dict:
        h = self.hparams
        return dict(num_frames=h.num_frames, sampling_rate=h.sampling_rate, backend=h.decode_backend, seed=h.seed,
                    short_side_range=tuple(h.train_short_side), crop_size=h.crop_size,
                    eval_short_side=h.test_short_side, hflip_prob=h.hflip_prob)

    def _dataset(self, annotation: str, split: str, mode: str) -> KineticsDataset:
        h = self.hparams
        if mode == "test":
            extra = dict(num_clips=h.test_num_clips, num_crops=h.test_num_crops, eval_crop_size=h.test_crop_size)
        else:
            extra = dict(eval_crop_size=h.crop_size)
        return KineticsDataset(annotation, self.root, split=split, mode=mode, label_names=self.label_names,
                               exclude_list=h.exclude_list, **extra, **self._common())

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets for ``stage`` ("fit", "validate", "test", "predict"; None = all with annotations)."""
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"dataset root not found: {self.root} (KineticsDataModule.root)")
        if stage in ("fit", None) and self.train_dataset is None:
            if stage == "fit" or os.path.isfile(self.train_annotation):
                self.train_dataset = self._dataset(self.train_annotation, "train", "train")
        if stage in ("fit", "validate", None) and self.val_dataset is None:
            if stage is not None or os.path.isfile(self.val_annotation):
                self.val_dataset = self._dataset(self.val_annotation, "val", "val")
        if stage in ("test", None) and self.test_dataset is None:
            if stage == "test" or os.path.isfile(self.test_annotation):
                self.test_dataset = self._dataset(self.test_annotation, self.test_split, "test")
        if stage == "predict" and self.predict_dataset is None:
            if self.hparams.predict_files is None:
                raise ValueError("KineticsDataModule.predict_files is not set: give a folder, a video or a list file")
            h = self.hparams
            self.predict_dataset = VideoFilesDataset(
                h.predict_files, mode="test", label_names=self.label_names, num_clips=h.test_num_clips,
                num_crops=h.test_num_crops, eval_crop_size=h.test_crop_size, **self._common())

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

    def _loader(self, dataset: Dataset | None, name: str, train: bool = False) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{name} dataset is not set up: call setup() with the matching stage first")
        h = self.hparams
        replicas, rank = self._replicas()
        if train:
            sampler = EpochDistributedSampler(dataset, replicas, rank, shuffle=True, seed=h.seed)
        else:
            sampler = UnpaddedDistributedSampler(dataset, replicas, rank)
        workers = int(h.num_workers)
        # an own generator for the workers' base seed, so creating an iterator never draws from the global RNG (which
        # dropout uses; a resumed run creates its iterators at other points than an uninterrupted one)
        kwargs = {"generator": torch.Generator().manual_seed(int(h.seed))}
        if train:
            return ResumableDataLoader(dataset, batch_size=h.clips_per_device, sampler=sampler, num_workers=workers,
                                       pin_memory=h.pin_memory, drop_last=True, batches_done=self._batches_done,
                                       persistent_workers=bool(h.persistent_workers and workers > 0), **kwargs)
        return DataLoader(dataset, batch_size=h.clips_per_device, sampler=sampler, num_workers=workers,
                          pin_memory=h.pin_memory, drop_last=train,
                          persistent_workers=bool(h.persistent_workers and workers > 0), **kwargs)

    def _batches_done(self) -> int:
        """Train batches of the current epoch whose step has run (0 without a trainer)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, "train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, "val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_dataset, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_dataset, "predict")


__all__ = ["KineticsDataModule"]
