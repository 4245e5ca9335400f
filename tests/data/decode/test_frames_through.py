"""``frames_through``: a function of the decoded frames without copying them first, and never keeping the
decoder's own buffer (decord memory freed in a forked worker crashed it)."""

import pytest
import torch

from gnvideo.data.decode import PyAVReader, decord_reader, open_video

needs_decord = pytest.mark.skipif(not decord_reader.decord_available(), reason="decord not installed")


@pytest.fixture()
def buffers(monkeypatch):
    """Data pointers of the DLPack views of decord's buffers made during the test."""
    made = []
    real = decord_reader.from_dlpack

    def recording(capsule):
        view = real(capsule)
        made.append(view.data_ptr())
        return view

    monkeypatch.setattr(decord_reader, "from_dlpack", recording)
    return made


def uses(t: torch.Tensor, pointers) -> bool:
    return t.untyped_storage().data_ptr() in pointers


@needs_decord
def test_decord_hands_its_buffer_and_keeps_only_the_result(video_dir, frame_index, buffers):
    seen = []

    def crop(frames):
        seen.append(frames.data_ptr())
        return frames[:, 8:40, 8:40].clone()

    with open_video(video_dir / "h264.mp4", backend="decord") as reader:
        out = reader.frames_through([3, 5, 7], crop)
        assert seen == buffers and len(buffers) == 1  # fn got decord's own buffer, not a copy
        assert not uses(out, buffers)  # made while the buffer lived: a different block
        full = reader.frames([3, 5, 7])
    assert len(buffers) == 1  # frames copies through numpy, no DLPack view
    assert torch.equal(out, full[:, 8:40, 8:40]) and [frame_index(f) for f in full] == [3, 5, 7]


@needs_decord
def test_a_result_sharing_the_buffer_or_an_error_runs_again_on_a_copy(video_dir, buffers):
    calls = []

    def view(frames):
        calls.append(uses(frames, buffers))
        return {"clip": frames[:, :8]}  # a view: would keep decord's buffer

    with open_video(video_dir / "h264.mp4", backend="decord") as reader:
        out = reader.frames_through([0, 1], view)
        assert calls == [True, False] and not uses(out["clip"], buffers)
        calls.clear()
        buffers.clear()  # freed: its address may be reused by any later tensor

        def fails(frames):
            calls.append(uses(frames, buffers))
            raise ValueError("bad crop")

        with pytest.raises(ValueError, match="bad crop") as info:
            reader.frames_through([0, 1], fails)
    assert calls == [True, False]  # the error that escapes comes from the copy
    tb, held = info.tb, []
    while tb is not None:  # no frame of the traceback holds decord's buffer
        held += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, torch.Tensor) and uses(v, buffers)]
        tb = tb.tb_next
    assert held == []


@needs_decord
def test_resized_frames_are_a_new_tensor(video_dir, buffers):
    with open_video(video_dir / "h264.mp4", backend="decord", short_side=24) as reader:
        out = reader.frames_through([0, 1], lambda frames: (uses(frames, buffers), frames.shape))
    assert out == (False, torch.Size([2, 24, 32, 3]))


def test_pyav_reader_applies_fn_to_its_frames(video_dir, frame_index):
    reader = PyAVReader(str(video_dir / "h264.mp4"))
    assert reader.frames_through([4, 2], lambda f: [frame_index(x) for x in f]) == [4, 2]
