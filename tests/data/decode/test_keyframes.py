"""Keyframe positions from headers and packet flags, the frames a clip read decodes, and x264's recorded settings."""

import shutil

import pytest

from gnvideo.data.decode import VideoDecodeError, keyframes
from gnvideo.data.decode.keyframes import (
    KeyframeLayout,
    encoder_settings,
    keyframe_layout,
    parse_x264_settings,
)
from gnvideo.data.decode.mp4meta import mp4_sync_samples


def test_layout_from_the_mp4_header_and_from_packets_agree(video_dir, monkeypatch):
    header = keyframe_layout(video_dir / "h264.mp4")  # 40 frames, keyint 12, B-frames
    assert header == KeyframeLayout(40, (0, 12, 24, 36))
    assert header.intervals == [12, 12, 12, 4] and header.max_interval == 12
    assert mp4_sync_samples(str(video_dir / "h264.mp4")) == (40, [0, 12, 24, 36])
    monkeypatch.setattr(keyframes, "mp4_sync_samples", lambda path: None)  # the PyAV path for the same file
    assert keyframe_layout(video_dir / "h264.mp4") == header
    assert keyframe_layout(video_dir / "h264_30fps.mkv") == KeyframeLayout(90, tuple(range(0, 90, 12)))


def test_layout_of_decode_order_avi_and_vp9(video_dir):
    avi = keyframe_layout(video_dir / "h264.avi")  # packet times in decode order: numbered by packet order
    assert avi.frame_count == 64 and avi.keyframes == (0, 12, 24, 36, 48, 60)
    assert keyframe_layout(video_dir / "vp9.webm").keyframes == (0, 12, 24, 36)


def test_unreadable_files(video_dir, tmp_path):
    with pytest.raises(VideoDecodeError, match="cannot open"):
        keyframe_layout(video_dir / "garbage.mp4")
    with pytest.raises(VideoDecodeError, match="empty"):
        keyframe_layout(video_dir / "zero.mp4")
    with pytest.raises(FileNotFoundError):
        keyframe_layout(tmp_path / "absent.mp4")


def test_frames_decoded_counts_from_the_keyframe_before_each_interval():
    layout = KeyframeLayout(100, (0, 50))
    assert layout.frames_decoded([10, 12]) == 11 + 2  # seek to 0, decode 0..10, then on to 12
    assert layout.frames_decoded([48, 52]) == 49 + 3  # 0..48, then a seek to 50 and 50..52
    assert layout.frames_decoded([12, 10, 10]) == 13  # read in order, repeats once
    assert layout.frames_decoded([98, 150]) == 49 + 1  # 50..98, then on to the last frame (99) for 150
    assert layout.frames_decoded([99]) == 50
    single = KeyframeLayout(300, (0,))
    # starts spread over 0..237: on average half the room (118.5) plus the 63-frame span
    assert single.mean_frames_decoded(32, 2, max_starts=238) == pytest.approx(118.5 + 63)
    assert single.max_interval == 300 and single.intervals == [300]
    dense = KeyframeLayout(300, tuple(range(0, 300, 16)))
    assert dense.mean_frames_decoded(32, 2) < 80 < single.mean_frames_decoded(32, 2)


def test_x264_settings_are_read_from_the_file(video_dir, tmp_path):
    settings = encoder_settings(video_dir / "h264.mp4")
    assert settings["encoder"].startswith("x264 core ") and settings["keyint"] == "12"
    assert settings["bframes"] == "3" and settings["cabac"] == "1"
    assert encoder_settings(video_dir / "h264_30fps.mkv")["keyint"] == "12"  # first packet, through PyAV
    assert encoder_settings(video_dir / "vp9.webm") == {}
    assert encoder_settings(video_dir / "garbage.mp4") == {}
    shutil.copy(video_dir / "h264.mp4", tmp_path / "copy.mov")
    assert encoder_settings(tmp_path / "copy.mov")["keyint"] == "12"


def test_parse_x264_settings():
    data = b"\x00\x05x264 - core 164 r3095 - H.264/MPEG-4 AVC codec - options: cabac=0 ref=1 keyint=64 psy=1\x00rest"
    assert parse_x264_settings(data) == {"encoder": "x264 core 164", "cabac": "0", "ref": "1", "keyint": "64",
                                         "psy": "1"}
    assert parse_x264_settings(b"no message here") == {}
