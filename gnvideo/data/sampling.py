"""Clip samplers: which frame indices make a clip.

A clip of ``num_frames`` frames at ``sampling_rate`` spans ``(num_frames - 1) * sampling_rate + 1`` video frames
(32x2 spans 63). Indices past the end of a short video are left as they are; the reader clamps them to the last frame
(and counts the repeats). Randomness only comes from the ``torch.Generator`` passed in; :func:`sample_generator` builds
one from (seed, epoch, index, attempt) so every clip is reproducible, differs per epoch, and does not depend on which
DataLoader worker draws it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler


def clip_span(num_frames: int, sampling_rate: int) -> int:
    """Number of video frames covered by one clip."""
    if num_frames < 1 or sampling_rate < 1:
        raise ValueError(f"num_frames and sampling_rate must be >= 1, got num_frames={num_frames}, "
                         f"sampling_rate={sampling_rate}")
    return (num_frames - 1) * sampling_rate + 1


def sample_generator(seed: int, epoch: int, index: int, attempt: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index, attempt) by a fixed mixing (no hash randomisation)."""
    mixed = (seed * 1_000_003 + epoch) * 1_000_033 + index
    mixed = (mixed * 1_000_037 + attempt) & 0x7FFF_FFFF_FFFF_FFFF
    g = torch.Generator()
    g.manual_seed(mixed)
    return g


def train_clip_indices(
    num_video_frames: int, num_frames: int, sampling_rate: int, generator: torch.Generator | None = None
) -> list[int]:
    """One random clip: start uniform in [0, num_video_frames - span] (0 when the video is shorter than a clip).

    Args:
        num_video_frames: frames in the video (>= 1).
        num_frames: frames per clip (T).
        sampling_rate: stride between clip frames, in video frames.
        generator: source of randomness (None = torch's global RNG).

    Returns:
        T frame indices, increasing; they may pass the end of a short video.
    """
    span = clip_span(num_frames, sampling_rate)
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    max_start = max(num_video_frames - span, 0)
    start = int(torch.randint(0, max_start + 1, (1,), generator=generator)) if max_start > 0 else 0
    return [start + i * sampling_rate for i in range(num_frames)]


def eval_clip_indices(
    num_video_frames: int, num_frames: int, sampling_rate: int, num_clips: int = 10
) -> list[list[int]]:
    """``num_clips`` clips with starts spaced uniformly over the video (deterministic).

    Clip k starts at round(k * (num_video_frames - span) / (num_clips - 1)) (one clip: the centre clip). Videos
    shorter than a clip give ``num_clips`` identical clips starting at 0.

    Returns:
        num_clips lists of T frame indices.
    """
    span = clip_span(num_frames, sampling_rate)
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if num_video_frames < 1:
        raise ValueError(f"num_video_frames must be >= 1, got {num_video_frames}")
    room = max(num_video_frames - span, 0)
    if num_clips == 1:
        starts = [room // 2]
    else:
        starts = [round(k * room / (num_clips - 1)) for k in range(num_clips)]
    return [[s + i * sampling_rate for i in range(num_frames)] for s in starts]


class EpochDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` (shuffled, padded like torch's) whose ``set_epoch`` also tells the dataset the epoch.

    Being a ``DistributedSampler``, Lightning keeps it instead of inserting its own, and calls ``set_epoch`` at the
    start of every epoch; the dataset's ``set_epoch`` (if any) then reseeds clip sampling. With ``num_replicas=1``
    it is an ordinary seeded shuffle.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = False) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        if callable(getattr(self.dataset, "set_epoch", None)):
            self.dataset.set_epoch(epoch)

    def skip_next(self, items: int) -> None:
        """The next ``__iter__`` (only that one) starts at item ``items`` of this rank's order for the epoch."""
        self._start = int(items)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        start, self._start = getattr(self, "_start", 0), 0
        return iter(indices[start:])


class ResumableDataLoader(DataLoader):
    """A train ``DataLoader`` that Lightning can resume mid-epoch (it has ``state_dict``/``load_state_dict``, which
    Lightning's fit loop saves in every checkpoint and loads before it creates the resumed epoch's iterator).

    The state is the sampler's epoch and the number of batches the training loop has consumed in it, read from
    ``batches_done`` (a callable: the trainer's count, because Lightning fetches batches ahead of the step). Loading
    it sets the epoch (and so the clip-sampling seeds) and makes the sampler skip those batches without decoding them.

    Args:
        sampler: an :class:`EpochDistributedSampler`.
        batches_done: returns the batches of the current epoch whose training step has run.
    """

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochDistributedSampler):
            raise TypeError("ResumableDataLoader needs an EpochDistributedSampler")
        self._batches_done = batches_done

    def state_dict(self) -> dict:
        epoch, done = int(self.sampler.epoch), int(self._batches_done())
        if done >= len(self):  # saved at the end of the epoch: resume at the start of the next one
            epoch, done = epoch + 1, 0
        return {"epoch": epoch, "batches_done": done, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size") not in (None, self.batch_size):
            raise ValueError(f"resume: the checkpoint was saved with data.clips_per_device={state['batch_size']}, "
                             f"this run has {self.batch_size}; a mid-epoch resume needs the same batch")
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip_next(int(state["batches_done"]) * int(self.batch_size))


class UnpaddedDistributedSampler(DistributedSampler):
    """In-order evaluation sampler: rank r gets one contiguous block, blocks differ by at most one item, nothing is
    repeated, so every view is seen exactly once across ranks (test views of a video stay mostly on one rank).

    Lightning does not replace a sampler that is already a ``DistributedSampler``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        n = len(dataset)  # type: ignore[arg-type]
        self.start = n * rank // num_replicas
        self.stop = n * (rank + 1) // num_replicas
        self.num_samples = self.stop - self.start
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["EpochDistributedSampler", "ResumableDataLoader", "UnpaddedDistributedSampler", "clip_span",
           "eval_clip_indices", "sample_generator", "train_clip_indices"]
