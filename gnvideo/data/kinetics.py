"""Map-style Kinetics datasets.

Modes: ``"train"`` one random clip per video (len = videos); ``"val"`` the centre clip with a centre crop (len =
videos); ``"test"`` one item per video holding all its views, ``num_clips`` uniformly spaced clips x ``num_crops``
crops (len = videos), read with one open decoder and one frame read of the union of the clips' frame indices.

Samples are dicts: ``video`` uint8 (T, crop, crop, 3) (RGB, 0-255, channels last, so batches are (B, T, H, W, 3);
not normalised: the device does that and permutes to (B, 3, T, H, W), see
:class:`gnvideo.data.transforms.BatchTransform`), ``label`` int, ``video_index`` int, ``view_index`` int, ``valid``
bool, ``flip`` bool (train: mirror this clip on the device; else False), and in train mode ``box_size`` int (the
side of the source box in the clip's top-left that the device enlarges to the crop, see
:mod:`gnvideo.data.transforms`). A test item holds the V = num_clips x num_crops views of a video: as uint8
``video`` (V, T, crop, crop, 3), or (``EvalTransform(views_on_device=True)``, the DataModule's choice on an
accelerator) as its frames, each once, and where the views lie in them, for the device to cut
(:mod:`gnvideo.data.collate`); ``view_index`` int64 (V,) (view = clip x num_crops + crop), the rest per video.
:func:`~gnvideo.data.collate.collate_views` makes a batch of views of either form, in which every view has its
video's ``label``, ``video_index``, ``valid`` and ``flip``.

Broken videos (the definition is in :mod:`gnvideo.data.decode.errors`: missing, empty, undecodable, a
decode error in any frame read, truncated): in train mode another video is drawn instead (up to ``max_retries`` times);
in val/test mode the sample has ``valid=False`` and zero views, so its video is never scored. A video that failed
once is broken for the rest of the dataset's life (never read again, never half-used). Failures are recorded in
shared memory, so across DataLoader workers and epochs each file is logged once (``logging.warning``, with the
reason) and the counts (``num_skipped``, ``failed_videos``) are right in the main process too. With a run's
:class:`~gnvideo.data.broken_list.BrokenVideoList` attached (the DataModule attaches its run folder's), every failure is
added to it as it happens; with ``skip_listed`` (training runs) the videos listed there, by an earlier attempt of the
run or another rank, are broken here too: never opened, and named by whoever listed them.

Decoder crashes and hangs: with ``decode_sandbox`` (the default) every video is decoded in a child process of the
process that loads it (:mod:`gnvideo.data.decode.sandbox`: one per DataLoader worker, or of the main process with 0
workers), so a decoder that crashes (segmentation fault, abort) or gives no frames for ``decode_timeout`` seconds
makes its file broken like any other ("decoder crashed: signal 11 (SIGSEGV)", "decoder hung: no frames after 60 s")
and the worker, its place in the sampler's order and the run go on.

Train randomness: clip position and transform draws come from a generator seeded with (seed, epoch, index, attempt),
so a sample is the same whichever worker loads it, and changes with the epoch. The epoch lives in shared memory, set
by :meth:`set_epoch` (the DataModule's train sampler calls it each epoch), so persistent workers see it too.
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import Dataset

from .annotations import VideoEntry, apply_exclude, load_label_names, read_annotations
from .broken_list import BrokenVideoList
from .collate import blank_views_item, make_views_item, views_of
from .decode import BACKENDS, VideoDecodeError, open_sandboxed, open_video, problem_reason, sandbox_available
from .layout import is_video_file, list_video_files, read_exclude_list, read_list_lines
from .sampling import eval_clip_indices, sample_generator, train_clip_indices
from .transforms import EvalTransform, TrainTransform

logger = logging.getLogger(__name__)

MODES = ("train", "val", "test")
LOAD_ERRORS = (OSError, ValueError, RuntimeError, EOFError, MemoryError)
DECODE_TIMEOUT = 60.0  # seconds; a clip decodes in well under one
_LIST_CHECK_SECONDS = 10.0  # how often a process looks whether other processes added to the run's broken list


class _KnownBroken(VideoDecodeError):
    """A video already found broken (and logged) by some worker."""


class ClipDataset(Dataset):
    """Clips from a list of :class:`VideoEntry`; see the module docstring for modes and samples.

    Args:
        entries: (path, label) per video.
        mode: "train", "val" or "test".
        label_names: class names (for ``num_classes``).
        transform: the clip transform of the split: a :class:`TrainTransform` in train mode (random scale, crop and
            flip draw), an :class:`EvalTransform` otherwise (val: one crop; test: its ``num_crops`` crops, or full
            frames). None = that class with its defaults (test: 3 crops).
        num_frames: T, frames per clip.
        sampling_rate: stride between clip frames, in video frames.
        num_clips: clips per video in test mode (uniformly spaced); val and train read one clip.
        backend: reader backend ("auto", "decord", "pyav").
        decode_short_side: scale frames at decode time to this short side (saves memory on large videos).
        seed: base seed for train sampling.
        max_retries: train mode, other videos tried after a failure before giving up with RuntimeError.
        decode_sandbox: decode in a child process, so a decoder crash or hang costs only its file (see the module
            docstring); False decodes in the loading process itself (a crash then ends that process). Needs
            ``os.fork``; without it the videos are decoded in the loading process.
        decode_timeout: seconds one decoder request (opening a video, reading a clip's frames) may take before the
            video is named hung and its decoder killed (``decode_sandbox`` only).
    """

    def __init__(
        self,
        entries: Sequence[VideoEntry],
        mode: str = "train",
        label_names: Sequence[str] | None = None,
        transform: TrainTransform | EvalTransform | None = None,
        num_frames: int = 32,
        sampling_rate: int = 2,
        num_clips: int = 10,
        backend: str = "auto",
        decode_short_side: int | None = None,
        seed: int = 0,
        max_retries: int = 10,
        decode_sandbox: bool = True,
        decode_timeout: float = DECODE_TIMEOUT,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend (decode_backend) must be one of {BACKENDS}, got {backend!r}")
        if not decode_timeout > 0:
            raise ValueError(f"decode_timeout must be a positive number of seconds, got {decode_timeout}")
        if transform is None:
            transform = TrainTransform() if mode == "train" else EvalTransform(num_crops=3 if mode == "test" else 1)
        wanted = TrainTransform if mode == "train" else EvalTransform
        if not isinstance(transform, wanted):
            raise ValueError(f"{mode} mode needs a {wanted.__name__}, got {type(transform).__name__}")
        if mode == "val" and transform.num_crops != 1:
            raise ValueError(f"val mode reads one view per video: the EvalTransform needs num_crops=1, "
                             f"got {transform.num_crops}")
        if mode == "val" and transform.full_frame:
            raise ValueError("full-frame views are a test view: use mode='test'")
        self.entries = list(entries)
        self.mode = mode
        self.transform = transform
        self.label_names = list(label_names) if label_names is not None else []
        self.num_frames, self.sampling_rate = int(num_frames), int(sampling_rate)
        self.num_clips = int(num_clips) if mode == "test" else 1
        self.num_crops = transform.num_crops if mode == "test" else 1
        self.backend, self.decode_short_side = backend, decode_short_side
        self.seed, self.max_retries = int(seed), int(max_retries)
        self.decode_sandbox = bool(decode_sandbox) and sandbox_available()
        self.decode_timeout = float(decode_timeout)
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.broken_list: BrokenVideoList | None = None
        self.skip_listed = False
        self._count_entries()
        self.num_repeated_frames = 0

    def _count_entries(self) -> None:
        """Per-entry state: failure counts shared by all workers, and the number of listed files not on disk."""
        self._failures = torch.zeros(len(self.entries), dtype=torch.int32).share_memory_()  # per video, all workers
        #: videos found broken elsewhere (the run's broken list): never opened, counted when drawn
        self._listed = torch.zeros(len(self.entries), dtype=torch.bool).share_memory_()
        self._record_lock = multiprocessing.get_context().Lock()  # a failure is counted and named in one step
        #: path -> reason of the failures met in this process only (``failed_videos`` covers all workers)
        self.local_failure_reasons: dict[str, str] = {}
        self.num_missing = sum(not os.path.exists(e.path) for e in self.entries)
        self._list_size, self._list_checked, self._index_of = -1, 0.0, None

    def with_entries(self, indices: Sequence[int]) -> ClipDataset:
        """The same dataset over ``entries[i]`` for ``i`` in ``indices`` (a split of it), with its own counts."""
        part = copy.copy(self)
        part.entries = [self.entries[i] for i in indices]
        part._epoch = self._epoch.clone().share_memory_()
        part._count_entries()
        return part

    # -- bookkeeping -------------------------------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        return len(self.entries)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def views_per_video(self) -> int:
        return self.num_clips * self.num_crops

    @property
    def epoch(self) -> int:
        return int(self._epoch[0])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used to seed train sampling (visible to already-started workers)."""
        self._epoch[0] = int(epoch)

    def __len__(self) -> int:
        return self.num_videos

    @property
    def num_skipped(self) -> int:
        """Samples that could not be loaded (every attempt on a broken video counts), over all workers."""
        return int(self._failures.sum())

    @property
    def failed_videos(self) -> list[str]:
        """Paths of the videos found broken so far, over all workers (and those of the run's broken list)."""
        broken = (self._failures > 0) | self._listed
        return [self.entries[i].path for i in torch.nonzero(broken).flatten().tolist()]

    def attach_broken_list(self, broken_list: BrokenVideoList | None, skip_listed: bool = True) -> None:
        """Add every failure to ``broken_list`` from now on; with ``skip_listed``, treat the videos it lists as broken
        (call before the DataLoader workers start; they look at the file again every few seconds for other
        processes' finds). Without it (a test: each names its own broken videos) the list is only written. Videos
        this dataset found broken before it had a list are added to it now."""
        self.broken_list, self.skip_listed = broken_list, bool(skip_listed)
        if broken_list is not None and self.local_failure_reasons:  # found before the run folder was known: kept
            broken_list.add_all(self.local_failure_reasons)
        if broken_list is not None and self.skip_listed:
            self._list_size = broken_list.size()
            self._list_checked = time.monotonic()
            self.mark_broken(broken_list.read())

    def mark_broken(self, broken: Mapping[str, str] | Sequence[str]) -> int:
        """Treat the listed videos (paths; any other key is ignored) as broken without opening them; returns how
        many of them are entries of this dataset."""
        found = [i for i in map(self._entry_index, broken) if i is not None]
        if found:
            self._listed[torch.tensor(found)] = True
        return len(found)

    def is_broken(self, path: str) -> bool:
        """Whether the entry ``path`` is known broken (failed here, or listed), so it will not be opened."""
        i = self._entry_index(path)
        return i is not None and (int(self._failures[i]) > 0 or bool(self._listed[i]))

    def report_broken(self, path: str, reason: str) -> bool:
        """The entry ``path`` was found broken by a read outside this dataset (the DataModule's keyframe check): it
        counts as this dataset's failed read (named once, added to the broken list, never opened). False when
        ``path`` is not an entry."""
        i = self._entry_index(path)
        if i is None:
            return False
        self._record_failure(i, VideoDecodeError(reason, path))
        return True

    def _entry_index(self, path: str) -> int | None:
        if self._index_of is None:
            self._index_of = {os.path.abspath(e.path): i for i, e in enumerate(self.entries)}
        return self._index_of.get(os.path.abspath(path))

    def _refresh_listed(self) -> None:
        """Take in what other processes added to the run's broken list (at most every few seconds)."""
        now = time.monotonic()
        if self.broken_list is None or not self.skip_listed or now - self._list_checked < _LIST_CHECK_SECONDS:
            return
        self._list_checked = now
        size = self.broken_list.size()
        if size != self._list_size:
            self._list_size = size
            self.mark_broken(self.broken_list.read())

    def _record_failure(self, video_index: int, err: BaseException) -> None:
        with self._record_lock:  # workers meeting one video at once: counted twice, named once
            first = int(self._failures[video_index]) == 0 and not bool(self._listed[video_index])
            self._failures[video_index] += 1
            if not first or isinstance(err, _KnownBroken):
                return
            path, reason = self.entries[video_index].path, problem_reason(err)
            self.local_failure_reasons[path] = reason
            newly = self.broken_list is None or self.broken_list.add(path, reason)
            if newly or not self.skip_listed:  # else another rank of the run named it
                logger.warning("skipping broken video %s (%s)", path, reason)

    def _open(self, video_index: int):
        self._refresh_listed()
        if int(self._failures[video_index]) > 0 or bool(self._listed[video_index]):  # broken for good
            raise _KnownBroken("found broken earlier", self.entries[video_index].path)
        path = self.entries[video_index].path
        if self.decode_sandbox:  # the frames are cropped into new tensors before the next request: no copy needed
            return open_sandboxed(path, self.backend, self.decode_short_side, timeout=self.decode_timeout,
                                  copy_frames=False)
        return open_video(path, backend=self.backend, short_side=self.decode_short_side)

    # -- loading -----------------------------------------------------------------------------------------------
    def _train_sample(self, video_index: int, generator: torch.Generator) -> dict:
        label = self.entries[video_index].label
        with self._open(video_index) as reader:
            indices = train_clip_indices(reader.frame_count, self.num_frames, self.sampling_rate, generator)
            # the last read of the file; the crop is taken from the decoder's own buffer (in a sandbox: its shared
            # memory file): one copy of the crop, none of the full frames
            clip = reader.frames_through(indices, lambda frames: self.transform(frames, generator), close=True)
            self.num_repeated_frames += reader.last_num_repeated
        return {"video": clip.video, "label": label, "video_index": video_index, "view_index": 0, "valid": True,
                "flip": clip.flip, "box_size": clip.box_size}

    def _views_item(self, video_index: int) -> dict:
        """All views of one video (:func:`~gnvideo.data.collate.make_views_item`): one open, one read of the union
        of its clips' frames, each frame copied once."""
        with self._open(video_index) as reader:
            clips = eval_clip_indices(reader.frame_count, self.num_frames, self.sampling_rate, self.num_clips)
            union = sorted({i for clip in clips for i in clip})
            item = reader.frames_through(union, lambda frames: make_views_item(self.transform, frames, union, clips),
                                         close=True)
            self.num_repeated_frames += reader.last_num_repeated
        return item

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        if self.mode == "train":
            return self._get_train(index)
        video_index = index
        try:
            item, valid = self._views_item(video_index), True
        except LOAD_ERRORS as err:
            self._record_failure(video_index, err)
            item, valid = blank_views_item(self.transform, self.views_per_video, self.num_frames), False
        label = self.entries[video_index].label
        if self.mode == "val":
            return {"video": views_of(item)[0], "label": label, "video_index": video_index, "view_index": 0,
                    "valid": valid, "flip": False}
        return {**item, "label": label, "video_index": video_index, "view_index": torch.arange(self.views_per_video),
                "valid": valid, "flip": False}

    def _get_train(self, index: int) -> dict:
        epoch = self.epoch
        tried = []
        video_index = index
        for attempt in range(self.max_retries + 1):
            generator = sample_generator(self.seed, epoch, index, attempt)
            if attempt > 0:
                video_index = int(torch.randint(0, self.num_videos, (1,), generator=generator))
            try:
                return self._train_sample(video_index, generator)
            except LOAD_ERRORS as err:
                self._record_failure(video_index, err)
                tried.append(self.entries[video_index].path)
        raise RuntimeError(f"{self.max_retries + 1} videos in a row failed to load for item {index}: {tried}")


class KineticsDataset(ClipDataset):
    """Kinetics from an official CSV or a ``path label`` list (see :func:`read_annotations`).

    Args:
        annotation: CSV or list file.
        root: dataset root (videos under ``root/{split}``).
        split: folder under root.
        mode: "train", "val" or "test".
        label_names: class names; None = packaged Kinetics-400 list.
        exclude_list: file of paths to leave out (one per line, e.g. the output of data_prep/check_videos.py).
        **kwargs: :class:`ClipDataset` options (transform, num_frames, sampling_rate, num_clips, ...).

    Videos listed but absent from disk are kept (they fail at load time like any broken file); their number is
    logged once at construction and kept in ``num_missing`` (as in every :class:`ClipDataset`).
    """

    def __init__(
        self,
        annotation: str | os.PathLike,
        root: str | os.PathLike,
        split: str = "train",
        mode: str = "train",
        label_names: Sequence[str] | None = None,
        num_frames: int = 32,
        sampling_rate: int = 2,
        exclude_list: str | os.PathLike | None = None,
        **kwargs,
    ) -> None:
        names = list(label_names) if label_names is not None else load_label_names()
        entries = read_annotations(annotation, root, split, names)
        if exclude_list is not None:
            before = len(entries)
            entries = apply_exclude(entries, read_exclude_list(exclude_list))
            logger.info("%s: excluded %d videos listed in %s", annotation, before - len(entries), exclude_list)
        self.annotation, self.root, self.split = os.fspath(annotation), os.fspath(root), split
        super().__init__(entries, mode, label_names=names, num_frames=num_frames, sampling_rate=sampling_rate,
                         **kwargs)
        if self.num_missing:
            logger.warning("%s: %d of %d videos are missing under %s (they will be skipped when loaded)",
                           annotation, self.num_missing, len(entries), root)


def _collect_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Video files from a list, a folder (recursive), one video, or a text file with one video per line (the text
    before a TAB; ``#`` starts a comment; relative paths are relative to the list file's folder)."""
    if isinstance(paths, (str, os.PathLike)):
        p = os.fspath(paths)
        if os.path.isdir(p):
            return list_video_files(p)
        if is_video_file(p):
            return [p]
        if not os.path.isfile(p):
            raise FileNotFoundError(f"predict input not found: {p}")
        base = os.path.dirname(os.path.abspath(p))  # a text file listing one video per line
        return [os.path.join(base, path) for _, path, _ in read_list_lines(p, split_at_blank=False)]
    return [os.fspath(x) for x in paths]


class VideoFilesDataset(ClipDataset):
    """Unlabelled videos for prediction (label -1); multi-view like test mode by default.

    Args:
        paths: a list of files, a folder (searched recursively for video files), a video file, or a text file with
            one path per line (relative to the list's folder; a list file is the way to pass names with commas).
        mode: "test" (num_clips x num_crops views) or "val" (centre clip, centre crop).
        **kwargs: :class:`ClipDataset` options.
    """

    def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], mode: str = "test", **kwargs) -> None:
        if mode == "train":
            raise ValueError("VideoFilesDataset is for prediction: mode must be 'val' or 'test'")
        files = _collect_paths(paths)
        super().__init__([VideoEntry(p, -1) for p in files], mode, **kwargs)

    @property
    def paths(self) -> list[str]:
        return [e.path for e in self.entries]


__all__ = ["MODES", "ClipDataset", "KineticsDataset", "VideoFilesDataset"]
