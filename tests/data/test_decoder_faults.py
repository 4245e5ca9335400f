"""A decoder that crashes or hangs in a DataLoader worker costs its file only: the same order for every other sample
as when that file is an ordinary broken file, named once with its reason, listed in the run's broken list and never
opened again, also by a new dataset of the same run (a resume)."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from gnvideo.data import ClipDataset, VideoEntry
from gnvideo.data.broken_list import BrokenVideoList
from gnvideo.data.decode import sandbox_available
from gnvideo.data.kinetics import logger as kinetics_logger
from gnvideo.data.transforms import EvalTransform, TrainTransform
from gnvideo.evaluation import aggregate_views

pytestmark = pytest.mark.skipif(not sandbox_available(), reason="needs os.fork")

CLIPS = dict(num_frames=8, sampling_rate=3, transform=TrainTransform((48, 56), 40), decode_timeout=2.0)
CRASH, HANG = "v2.mp4", "v5.mp4"


def _entries(video_dir, folder, broken_as_empty: bool = False) -> list[VideoEntry]:
    """8 videos v0..v7 (r0..r7 with v2 and v5 empty, an ordinary broken file, when ``broken_as_empty``)."""
    folder.mkdir()
    entries = []
    for i in range(8):
        dst = folder / (f"r{i}.mp4" if broken_as_empty else f"v{i}.mp4")
        if broken_as_empty and f"v{i}.mp4" in (CRASH, HANG):
            dst.write_bytes(b"")
        else:
            shutil.copy(video_dir / ("big.mp4" if i % 2 else "h264.mp4"), dst)
        entries.append(VideoEntry(str(dst), i % 2))
    return entries


def _epochs(ds: ClipDataset, epochs: int = 2) -> list[list[int]]:
    """video_index of every sample, in loader order, per epoch (2 workers)."""
    order = []
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        seen = []
        for batch in DataLoader(ds, batch_size=4, shuffle=False, num_workers=2):
            assert batch["valid"].all()
            seen.extend(batch["video_index"].tolist())
        order.append(seen)
    return order


def test_crash_and_hang_in_workers_cost_one_file_each(video_dir, tmp_path, faulty_decoder):
    faults, opened = faulty_decoder
    faults.update({CRASH: "crash", HANG: "hang"})
    reference = ClipDataset(_entries(video_dir, tmp_path / "ref", broken_as_empty=True), "train", ["a", "b"], **CLIPS)
    expected = _epochs(reference)

    entries = _entries(video_dir, tmp_path / "run")
    ds = ClipDataset(entries, "train", ["a", "b"], **CLIPS)
    run_list = BrokenVideoList(tmp_path / "run_folder" / "broken_videos.txt")
    ds.attach_broken_list(run_list)
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # worker processes inherit it and append to the same file
    kinetics_logger.addHandler(handler)
    try:
        assert _epochs(ds) == expected  # the retry rule of any broken training video, nothing else moved
    finally:
        kinetics_logger.removeHandler(handler)
        handler.close()
    assert sorted(ds.failed_videos) == [entries[2].path, entries[5].path]
    assert ds.num_skipped == reference.num_skipped >= 4  # each met at least once per epoch
    lines = log_file.read_text().splitlines()
    assert [line for line in lines if CRASH in line] == [
        f"skipping broken video {entries[2].path} (decoder crashed: signal 11 (SIGSEGV))"]
    assert [line for line in lines if HANG in line] == [
        f"skipping broken video {entries[5].path} (decoder hung: no frames after 2 s)"]
    assert opened(CRASH) == opened(HANG) == 1  # never opened again once named
    assert run_list.read() == {entries[2].path: "decoder crashed: signal 11 (SIGSEGV)",
                               entries[5].path: "decoder hung: no frames after 2 s"}

    resumed = ClipDataset(entries, "train", ["a", "b"], **CLIPS)  # the same run, resumed: a new dataset
    resumed.attach_broken_list(run_list)
    assert _epochs(resumed) == expected
    assert opened(CRASH) == opened(HANG) == 1
    assert sorted(resumed.failed_videos) == sorted(ds.failed_videos)


def test_test_mode_counts_the_crashed_video_as_skipped(video_dir, tmp_path, faulty_decoder):
    faults, _ = faulty_decoder
    faults[CRASH] = "crash"
    entries = _entries(video_dir, tmp_path / "run")
    ds = ClipDataset(entries, "test", ["a", "b"], EvalTransform(48, 40), num_clips=2, num_frames=8, sampling_rate=3)
    items = [it for batch in DataLoader(ds, batch_size=None, num_workers=2) for it in [batch]]
    valid = torch.tensor([it["valid"] for it in items])
    video_index = torch.tensor([it["video_index"] for it in items])
    assert valid.tolist() == [i != 2 for i in video_index.tolist()]
    logits = torch.randn(len(items), 2)
    metrics = aggregate_views(logits, video_index, torch.tensor([it["label"] for it in items]), valid)
    assert (metrics["videos_scored"], metrics["videos_skipped"]) == (7, 1)
    assert ds.failed_videos == [entries[2].path]


def test_listed_videos_are_never_opened(video_dir, tmp_path, faulty_decoder):
    _, opened = faulty_decoder
    entries = _entries(video_dir, tmp_path / "run")
    run_list = BrokenVideoList(tmp_path / "broken_videos.txt")
    run_list.add(entries[3].path, "decoder crashed: signal 11 (SIGSEGV)")
    assert not run_list.add(entries[3].path, "again")  # listed once
    ds = ClipDataset(entries, "val", ["a", "b"], EvalTransform(48, 40), num_frames=8, sampling_rate=3)
    ds.attach_broken_list(run_list)
    assert [ds[i]["valid"] for i in range(8)] == [i != 3 for i in range(8)]
    assert opened("v3.mp4") == 0 and opened("v4.mp4") == 1
    assert ds.failed_videos == [entries[3].path] and ds.num_skipped == 1
    assert ds.mark_broken([entries[6].path, "/not/in/this/dataset.mp4"]) == 1
    assert not ds[6]["valid"] and opened("v6.mp4") == 1  # read once above, not again
