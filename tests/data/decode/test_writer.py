"""The shared video writer: containers from the extension, chunked input, frame rates, rotation, atomic files."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from gnvideo.data.decode import open_video
from gnvideo.data.decode.writer import VideoWriter, partial_path, write_video


def _decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = (c.format.name, stream.codec_context.name, stream.average_rate)
        return info, np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])


@pytest.fixture()
def frames(draw_frame):
    """uint8 (n, 48, 64, 3) frames showing their index."""
    return lambda n: np.stack([draw_frame(i, 64, 48) for i in range(n)])


@pytest.mark.parametrize("name,codec,container", [
    ("a.mp4", "libx264", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("a.mkv", "libx264", "matroska,webm"),
    ("a.mov", "libx264", "mov,mp4,m4a,3gp,3g2,mj2"),
    ("a.avi", "mpeg4", "avi"),
])
def test_every_frame_comes_back_in_order(tmp_path, frames, frame_index, name, codec, container):
    assert write_video(tmp_path / name, frames(12), 25, codec=codec) == 12
    (found_container, found_codec, rate), decoded = _decode(tmp_path / name)
    assert found_container == container and found_codec == {"libx264": "h264"}.get(codec, codec) and rate == 25
    assert decoded.shape == (12, 48, 64, 3) and [frame_index(f) for f in decoded] == list(range(12))
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temp file left behind


def test_chunks_tensors_and_arrays_give_the_same_file(tmp_path, frames):
    clip = frames(10)
    write_video(tmp_path / "whole.mp4", clip, 10, deterministic=True)
    chunks = [torch.from_numpy(clip[:3]), clip[3:7], *clip[7:]]  # a tensor, an array, single (H, W, 3) frames
    assert write_video(tmp_path / "chunks.mp4", iter(chunks), 10, deterministic=True) == 10
    assert (tmp_path / "whole.mp4").read_bytes() == (tmp_path / "chunks.mp4").read_bytes()


def test_fractional_rate_and_explicit_timestamps(tmp_path, frames, draw_frame):
    write_video(tmp_path / "ntsc.mp4", frames(6), Fraction(30000, 1001))
    assert _decode(tmp_path / "ntsc.mp4")[0][2] == Fraction(30000, 1001)
    with VideoWriter(tmp_path / "vfr.mkv", 25, time_base=Fraction(1, 1000)) as writer:
        for i, ms in enumerate([0, 40, 200, 240]):
            writer.write(draw_frame(i, 64, 48), pts=[ms])
    with av.open(str(tmp_path / "vfr.mkv")) as c:
        assert [round(f.time * 1000) for f in c.decode(video=0)] == [0, 40, 200, 240]


def test_rotation_is_metadata_and_the_reader_applies_it(tmp_path, frames):
    write_video(tmp_path / "rot.mov", frames(3), 25, rotation=90)
    _, stored = _decode(tmp_path / "rot.mov")
    assert stored.shape == (3, 48, 64, 3)  # pixels as given
    assert open_video(tmp_path / "rot.mov").frames([0]).shape == (1, 64, 48, 3)  # shown upright, turned


def test_failure_leaves_nothing_on_disk(tmp_path, frames):
    target = tmp_path / "x.mp4"
    target.write_bytes(b"old")
    with pytest.raises(ValueError, match="uint8"):
        write_video(target, np.zeros((2, 48, 64, 3), np.float32), 25)
    with pytest.raises(RuntimeError, match="stop"), VideoWriter(target, 25) as writer:
        writer.write(frames(2))
        raise RuntimeError("stop")
    assert target.read_bytes() == b"old" and not partial_path(target).exists()
    with pytest.raises(ValueError, match="no container"):
        write_video(tmp_path / "x.gif", frames(2), 25)
