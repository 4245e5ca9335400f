"""ResumableDataLoader / EpochDistributedSampler state: the position the loop consumed, not what workers prefetched."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import Dataset

from gnvideo.data.sampling import EpochDistributedSampler, ResumableDataLoader


class _Items(Dataset):
    """Item i of epoch e is (e, i): shows which epoch the dataset was told and which index was drawn."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        self._epoch[0] = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor([int(self._epoch[0]), i])


def _loader(workers: int, n: int = 20) -> ResumableDataLoader:
    ds = _Items(n)
    return ResumableDataLoader(ds, batch_size=3, sampler=EpochDistributedSampler(ds, seed=5), num_workers=workers,
                               drop_last=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_state_counts_consumed_batches_and_resume_continues_the_order(workers):
    ref = _loader(workers)
    ref.sampler.set_epoch(3)
    full = [b for b in ref]
    assert len(full) == 6 and all(int(b[0, 0]) == 3 for b in full)

    run = _loader(workers)
    run.sampler.set_epoch(3)
    it = iter(run)
    got = [next(it) for _ in range(2)]  # workers have prefetched more than 2 batches by now
    state = run.state_dict()
    assert state == {"epoch": 3, "consumed": 6, "num_samples": 20}
    del it

    resumed = _loader(workers)  # a fresh process: epoch 0 until the state is loaded
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert all(torch.equal(a, b) for a, b in zip(got + rest, full)) and len(got + rest) == len(full)
    assert list(resumed)[0].shape == full[0].shape and len(list(resumed)) == 6  # the skip applies once


def test_finished_epoch_is_saved_as_the_start_of_the_next():
    loader = _loader(0)
    loader.sampler.set_epoch(1)
    list(loader)
    assert loader.state_dict() == {"epoch": 2, "consumed": 0, "num_samples": 20}


def test_load_refuses_another_shard_size():
    with pytest.raises(ValueError, match="cannot resume mid-epoch"):
        _loader(0, n=21).load_state_dict({"epoch": 1, "consumed": 3, "num_samples": 20})
    other = _loader(0, n=21)  # at an epoch boundary the shard size may change (another world size)
    other.load_state_dict({"epoch": 2, "consumed": 0, "num_samples": 20})
    assert other.sampler.epoch == 2 and len(list(other)) == 7


class _CollectingItems(Dataset):
    """Runs the garbage collector in the worker, as any allocation-heavy worker eventually does."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        import gc

        gc.collect()
        return i


def test_fork_safe_loader_frees_garbage_decoders_before_forking(video_dir):
    """A decord reader in a reference cycle, garbage when the workers fork: never freed inside a forked worker
    without its decoder threads (an abort with a plain DataLoader here), and still freed in the main process."""
    import decord

    from gnvideo.data.sampling import ForkSafeDataLoader

    holder: dict = {"reader": decord.VideoReader(str(video_dir / "h264.mp4"), num_threads=2)}
    holder["self"] = holder  # a cycle: only the garbage collector frees it
    holder["reader"].get_batch([0, 5])
    del holder
    loader = ForkSafeDataLoader(_CollectingItems(), batch_size=2, num_workers=2)
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]  # new workers, forked again
    import gc

    assert gc.get_freeze_count() == 0
    gc.collect()
    assert not any(isinstance(o, decord.VideoReader) for o in gc.get_objects())  # the main process freed it
