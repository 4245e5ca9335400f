"""A video that decodes partway (issue 10, finding 2): never trained or scored on repeated frames, logged once."""

from __future__ import annotations

import logging
import shutil

import torch
from torch.utils.data import DataLoader

from gnvideo.data import ClipDataset, VideoEntry
from gnvideo.data.kinetics import logger as kinetics_logger
from gnvideo.data.transforms import EvalTransform, TrainTransform
from gnvideo.evaluation import aggregate_views

SMALL = dict(num_frames=8, sampling_rate=3)


def _entries(video_dir, tmp_path):
    paths = []
    for i, name in enumerate(["big.mp4", "corrupt.mp4", "big.mp4", "h264.mp4"]):
        dst = tmp_path / f"v{i}_{name}"
        shutil.copy(video_dir / name, dst)
        paths.append(VideoEntry(str(dst), i % 2))
    return paths


def test_eval_skips_partly_decodable_video(video_dir, tmp_path):
    entries = _entries(video_dir, tmp_path)
    ds = ClipDataset(entries, "test", ["a", "b"], EvalTransform(48, 40), num_clips=4, **SMALL)
    items = [ds[i] for i in range(len(ds))]
    valid = torch.tensor([it["valid"] for it in items])
    video_index = torch.tensor([it["video_index"] for it in items])
    assert not valid[video_index == 1].all() and valid[video_index != 1].all()
    logits = torch.randn(len(items), 2)
    metrics = aggregate_views(logits, video_index, torch.tensor([it["label"] for it in items]), valid)
    assert metrics["videos_scored"] == 3 and metrics["videos_skipped"] == 1
    assert ds.failed_videos == [entries[1].path]
    assert ds.local_failure_reasons[entries[1].path].startswith("decode error at frame")


def test_train_draws_another_video_and_logs_once_across_workers(video_dir, tmp_path):
    entries = _entries(video_dir, tmp_path)
    # 16 x 3 frames of 50: every clip reaches the damaged part
    long_clips = dict(SMALL, num_frames=16, transform=TrainTransform((48, 56), 40))
    ds = ClipDataset(entries, "train", ["a", "b"], **long_clips)
    log_file = tmp_path / "log.txt"
    handler = logging.FileHandler(log_file)  # worker processes inherit it and append to the same file
    kinetics_logger.addHandler(handler)
    try:
        for epoch in range(3):
            ds.set_epoch(epoch)
            for batch in DataLoader(ds, batch_size=4, num_workers=2):
                assert batch["valid"].all()
                assert not (batch["video_index"] == 1).any()  # the corrupt file never makes a sample
    finally:
        kinetics_logger.removeHandler(handler)
        handler.close()
    lines = [line for line in log_file.read_text().splitlines() if "corrupt.mp4" in line]
    assert len(lines) == 1 and "decode error at frame" in lines[0]  # once, whichever worker met it first
    assert ds.num_skipped >= 3  # met (and counted) at least once per epoch, seen from the main process
    assert ds.failed_videos == [entries[1].path]
