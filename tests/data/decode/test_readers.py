import os

import numpy as np
import pytest
import torch

from gnvideo.data.decode import PyAVReader, VideoDecodeError, decord_reader, open_video, pyav_reader
from gnvideo.data.decode.mp4meta import mp4_rotation

BACKENDS = ["pyav"] + (["decord"] if decord_reader.decord_available() else [])
INDICES = [0, 1, 2, 3, 5, 8, 13, 21, 34, 39, 17, 17, 6]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "mpeg4.avi", "vfr.mp4"])
def test_frames_are_the_requested_ones(video_dir, frame_index, name, backend):
    reader = open_video(video_dir / name, backend=backend)
    assert reader.backend == backend
    n = reader.frame_count
    indices = [i for i in INDICES if i < n] + [n - 1]
    frames = reader.frames(indices)
    assert frames.dtype == torch.uint8 and frames.shape == (len(indices), 48, 64, 3)
    assert [frame_index(f) for f in frames] == indices
    assert reader.last_num_repeated == 0
    assert reader.fps > 0 and reader.duration == pytest.approx(n / reader.fps)


def test_h264_fixture_has_b_frames(video_dir):
    import av

    with av.open(str(video_dir / "h264.mp4")) as c:
        types = {int(f.pict_type) for f in c.decode(video=0)}
    assert 3 in types  # AV_PICTURE_TYPE_B


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_video_repeats_last_frame(video_dir, frame_index, backend):
    reader = open_video(video_dir / "short.mp4", backend=backend)
    assert reader.frame_count == 5
    frames = reader.frames([0, 2, 4, 6, 8])
    assert [frame_index(f) for f in frames] == [0, 2, 4, 4, 4]
    assert reader.last_num_repeated == 2 and reader.num_repeated == 2


def _cut_copy(src, path, keep: float):
    """Copy of ``src`` with the index up front (faststart) and only the first ``keep`` of its bytes."""
    import av

    with av.open(str(src)) as inp, av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        for packet in inp.demux(inp.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("backend", BACKENDS + ["auto"])
def test_cut_file_is_truncated_for_every_backend(tmp_path, make_video, backend):
    """The header announces 40 frames, the data holds far fewer: broken (the check_videos verdict), never clamped."""
    path = _cut_copy(make_video(tmp_path / "full.mp4", 40), tmp_path / "cut.mp4", 0.85)
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: truncated: \d+ of 40 frames") as info:
        open_video(path, backend=backend).frames([0, 10, 39])
    assert info.value.reason.startswith("truncated:")


def test_count_off_by_a_frame_is_clamped(video_dir, frame_index, monkeypatch):
    """A header one frame too long is a rounding, not damage: reading stops at the real end."""
    real_probe = pyav_reader.pyav_probe
    monkeypatch.setattr(pyav_reader, "pyav_probe", lambda p: (real_probe(p)[0] + 1,) + real_probe(p)[1:3] + (41,))
    reader = open_video(video_dir / "h264.mp4", backend="pyav")
    assert reader.frame_count == 41
    frames = reader.frames([38, 40])
    assert reader.frame_count == 40
    assert [frame_index(f) for f in frames] == [38, 39]
    assert reader.last_num_repeated == 1


def test_count_far_too_large_is_truncated(video_dir, monkeypatch):
    real_probe = pyav_reader.pyav_probe
    monkeypatch.setattr(pyav_reader, "pyav_probe", lambda p: (real_probe(p)[0] + 25,) + real_probe(p)[1:3] + (65,))
    reader = open_video(video_dir / "h264.mp4", backend="pyav")
    with pytest.raises(VideoDecodeError, match="truncated: 40 of 65 frames decodable"):
        reader.frames([38, 50, 64])


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_rotation_metadata_is_applied(video_dir, backend):
    import av

    with av.open(str(video_dir / "rot90.mp4")) as c:
        raw = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    frames = open_video(video_dir / "rot90.mp4", backend=backend).frames([0])
    assert frames.shape == (1, 64, 48, 3)
    expected = torch.from_numpy(np.ascontiguousarray(np.rot90(raw, 1)))
    assert (frames[0].float() - expected.float()).abs().mean() < 2
    # the red marker (top-left of the stored frame) ends up bottom-left after a 90-degree counter-clockwise turn
    assert frames[0, -4, 2, 0] > 150 and frames[0, 2, 2, 0] < 100


@pytest.mark.parametrize("rotation", [180, 270])
def test_other_rotations_match_pyav_metadata(tmp_path, make_video, rotation):
    import av

    path = make_video(tmp_path / f"rot{rotation}.mp4", 3, rotation=rotation)
    assert mp4_rotation(str(path)) == pyav_reader.pyav_probe(str(path))[2] == rotation
    with av.open(str(path)) as c:
        raw = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    reader = open_video(path)
    expected = torch.from_numpy(np.ascontiguousarray(np.rot90(raw, rotation // 90)))
    assert reader.backend == "pyav" and reader.rotation == rotation
    assert (reader.frames([0])[0].float() - expected.float()).abs().mean() < 2


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_time_resize(video_dir, frame_index, backend):
    reader = open_video(video_dir / "h264.mp4", backend=backend, short_side=32)
    frames = reader.frames([7, 30])
    assert frames.shape == (2, 32, 43, 3)
    assert [frame_index(f) for f in frames] == [7, 30]


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("name", ["zero.mp4", "garbage.mp4", "missing.mp4"])
def test_broken_files_raise_naming_the_file(video_dir, name, backend):
    path = video_dir / name
    with pytest.raises((FileNotFoundError, VideoDecodeError), match=name):
        open_video(path, backend=backend).frames([0])


def test_truncated_file_without_index_fails_naming_it(video_dir):
    """A cut file (moov at the end) cannot be opened: the error names it."""
    with pytest.raises(VideoDecodeError, match="truncated.mp4"):
        open_video(video_dir / "truncated.mp4").frames([0, 30])


def test_bad_arguments(video_dir):
    with pytest.raises(ValueError, match="backend"):
        open_video(video_dir / "h264.mp4", backend="opencv")
    with pytest.raises(ValueError, match="negative"):
        open_video(video_dir / "h264.mp4", backend="pyav").frames([-1])


def test_pyav_fallback_when_decord_missing(video_dir, frame_index, monkeypatch):
    monkeypatch.setattr(decord_reader, "decord_available", lambda: False)
    reader = open_video(video_dir / "h264.mp4")
    assert reader.backend == "pyav"
    assert [frame_index(f) for f in reader.frames([3, 4])] == [3, 4]


@pytest.mark.skipif(not decord_reader.decord_available(), reason="decord not installed")
def test_decord_failure_on_read_falls_back_to_pyav(video_dir, frame_index, monkeypatch):
    reader = open_video(video_dir / "h264.mp4", backend="decord")

    def broken(indices):
        raise RuntimeError("simulated decord failure")

    monkeypatch.setattr(reader._vr, "get_batch", broken)
    assert [frame_index(f) for f in reader.frames([3, 9])] == [3, 9]
    assert reader.backend == "pyav"
    assert os.path.basename(reader.path) == "h264.mp4"


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "mpeg4.avi", "vfr.mp4"])
def test_pyav_seek_path_is_frame_accurate(video_dir, frame_index, name):
    reader = PyAVReader(str(video_dir / name))
    n = reader.frame_count
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        start = int(torch.randint(0, n - 4, (1,), generator=g))
        indices = [start, start + 1, start + 3, n - 1]
        fast = reader._frames_by_seeking(indices)
        assert fast is not None  # timestamps are usable in all these containers
        assert [frame_index(f) for f in fast] == indices
        assert torch.equal(fast, reader._frames_sequential(indices))
