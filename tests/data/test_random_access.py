"""Keyframe summaries and the DataModule's one warning for videos whose keyframes lie far apart."""

import logging

import numpy as np
import pytest

from gnvideo.data import KineticsDataModule, random_access
from gnvideo.data.decode.writer import write_video as encode
from gnvideo.data.random_access import slow_access_warning, summarize

SMALL_VIEWS = dict(train_short_side_range=(48, 56), train_crop_size=40, val_short_side=48, val_crop_size=40,
                   test_short_side=48, test_crop_size=40)


def facts(*intervals, decoded=20.0):
    return [{"path": f"v{i}", "max_interval": m, "frames_decoded": decoded} for i, m in enumerate(intervals)]


def test_summary_buckets_median_and_slow_flag():
    s = summarize(facts(12, 64, 65, 250, 400) + [{"path": "bad", "problem": "cannot open"}], 32, 2)
    assert s["videos"] == 6 and s["unreadable"] == 1 and s["clip"] == {"num_frames": 32, "sampling_rate": 2,
                                                                         "span": 63}
    assert s["max_interval"]["histogram"] == {"1-16": 1, "17-32": 0, "33-64": 1, "65-128": 1, "129-256": 1,
                                              ">256": 1}
    assert s["max_interval"]["median"] == 65 and s["max_interval"]["max"] == 400 and s["max_interval"]["p90"] == 400
    assert not s["slow"]  # 65 <= 2 spans
    assert summarize(facts(127, 250, 250), 32, 2)["slow"]
    assert s["decoded_per_frame_used"] == pytest.approx(20 / 32)
    assert summarize([{"path": "bad", "problem": "x"}], 8, 8) == {"videos": 1, "unreadable": 1, "slow": False,
                                                                  "clip": {"num_frames": 8, "sampling_rate": 8,
                                                                           "span": 57}}


def _frames(n, width=64, height=48):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width * 2, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, i % width:i % width + width]) for i in range(n)]


@pytest.fixture(scope="module")
def long_gop_root(tmp_path_factory):
    """A dataset whose videos have one keyframe each (x264's default interval) and one unreadable file."""
    root = tmp_path_factory.mktemp("long_gop")
    (root / "annotations").mkdir()
    rows = ["label,youtube_id,time_start,time_end,split\n"]
    for split in ("train", "val"):
        for i in range(4):
            folder = root / split / "a"
            folder.mkdir(parents=True, exist_ok=True)
            encode(folder / f"{split}{i}_000000_000005.mp4", _frames(120), 24, preset="ultrafast")
            rows.append(f"a,{split}{i},0,5,{split}\n")
        (root / "annotations" / f"{split}.csv").write_text("".join(r for r in rows if r.endswith(f"{split}\n")
                                                                   or r.startswith("label")))
    (root / "labels.txt").write_text("a\n")
    return root


def test_slow_access_warning_names_the_reencode_command(long_gop_root, video_dir):
    paths = sorted(str(p) for p in (long_gop_root / "train").rglob("*.mp4"))
    text = slow_access_warning(paths + [str(video_dir / "garbage.mp4")], 4, 2, "ROOT", count=8)
    assert text is not None and text.endswith("gnvideo-prepare-kinetics --reencode ROOT")
    assert "keyframe every 120 frames (median of 4 sampled)" in text and "clip span of 7" in text
    assert slow_access_warning([str(video_dir / "h264.mp4")], 4, 2, "ROOT") is None  # keyint 12 <= 2 spans
    assert slow_access_warning([str(video_dir / "garbage.mp4")], 4, 2, "ROOT") is None  # nothing readable


def test_isolated_warning_survives_a_crashing_and_a_hanging_file(long_gop_root, monkeypatch):
    """With a timeout (the DataModule passes data.decode_timeout) the headers are read in a worker process: a read
    that crashes or hangs it costs that file, and the warning comes from the others."""
    import os
    import signal
    import time

    paths = sorted(str(p) for p in (long_gop_root / "train").rglob("*.mp4"))
    real = random_access._inspect_job

    def faulty(job, progress):
        if job[0] == paths[0]:
            os.kill(os.getpid(), signal.SIGSEGV)  # a native crash in the demuxer, as the pool sees it
        if job[0] == paths[1]:
            time.sleep(3600)
        return real(job, progress)

    monkeypatch.setattr(random_access, "_inspect_job", faulty)  # the forked worker inherits it
    text = slow_access_warning(paths, 4, 2, "ROOT", count=8, timeout=3)
    assert text is not None and "keyframe every 120 frames (median of 2 sampled)" in text


def _datamodule(root, **kwargs):
    return KineticsDataModule(str(root), clips_per_device=2, num_workers=0, num_frames=4, sampling_rate=2,
                              pin_memory=False, **SMALL_VIEWS, **kwargs)


def test_datamodule_warns_once_when_the_fit_starts_reading(long_gop_root, caplog):
    caplog.set_level(logging.WARNING, logger="gnvideo.data.datamodule")
    dm = _datamodule(long_gop_root)
    dm.setup("fit")
    assert not [r for r in caplog.records if "keyframe" in r.getMessage()]  # the runner's early set-up reads nothing
    dm.train_dataloader()
    dm.setup("fit")
    dm.train_dataloader()
    dm.setup("test")
    lines = [r.getMessage() for r in caplog.records if "keyframe" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("data: training videos have a keyframe every 120 frames")
    assert lines[0].endswith(f"gnvideo-prepare-kinetics --reencode {long_gop_root}") and "\n" not in lines[0]
    caplog.clear()
    dm = _datamodule(long_gop_root, keyframe_check_files=0)
    dm.setup("fit")
    dm.train_dataloader()
    assert not [r for r in caplog.records if "keyframe" in r.getMessage()]


def test_a_failing_check_never_stops_setup(long_gop_root, caplog, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unexpected")

    monkeypatch.setattr(random_access, "keyframe_layout", broken)
    caplog.set_level(logging.WARNING)
    dm = _datamodule(long_gop_root)
    dm.setup("fit")
    dm.train_dataloader()  # inspect_video only catches read errors: this one reaches the DataModule, which goes on
    assert dm.train_dataset is not None and not [r for r in caplog.records if "keyframe" in r.getMessage()]
    assert not dm.train_dataset.failed_videos  # a Python error in the check is no verdict on the file
