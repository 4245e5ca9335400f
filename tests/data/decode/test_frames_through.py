"""``frames_through``: a function of the decoded frames without copying them first, and never keeping the
decoder's own buffer (decord memory freed in a forked worker crashed it)."""

import pytest
import torch

from gnvideo.data.decode import PyAVReader, decord_reader, open_video

needs_decord = pytest.mark.skipif(not decord_reader.decord_available(), reason="decord not installed")


def own_memory(t: torch.Tensor) -> bool:
    """torch-allocated storage (resizable); a DLPack view of decord's buffer is not."""
    return t.untyped_storage().resizable()


@needs_decord
def test_decord_hands_its_buffer_and_keeps_only_the_result(video_dir, frame_index):
    seen = []

    def crop(frames):
        seen.append(own_memory(frames))
        return frames[:, 8:40, 8:40].clone()

    with open_video(video_dir / "h264.mp4", backend="decord") as reader:
        out = reader.frames_through([3, 5, 7], crop)
        full = reader.frames([3, 5, 7])
    assert seen == [False]  # decord's own buffer, not a copy
    assert own_memory(out) and torch.equal(out, full[:, 8:40, 8:40])
    assert own_memory(full) and [frame_index(f) for f in full] == [3, 5, 7]


@needs_decord
def test_a_result_sharing_the_buffer_or_an_error_runs_again_on_a_copy(video_dir):
    calls = []

    def view(frames):
        calls.append(own_memory(frames))
        return {"clip": frames[:, :8]}  # a view: would keep decord's buffer

    with open_video(video_dir / "h264.mp4", backend="decord") as reader:
        out = reader.frames_through([0, 1], view)
        assert calls == [False, True] and own_memory(out["clip"])
        calls.clear()

        def fails(frames):
            calls.append(own_memory(frames))
            raise ValueError("bad crop")

        with pytest.raises(ValueError, match="bad crop") as info:
            reader.frames_through([0, 1], fails)
    assert calls == [False, True]  # the error that escapes comes from the copy
    tb, held = info.tb, []
    while tb is not None:  # no frame of the traceback holds decord's buffer
        held += [v for v in tb.tb_frame.f_locals.values() if isinstance(v, torch.Tensor) and not own_memory(v)]
        tb = tb.tb_next
    assert held == []


@needs_decord
def test_resized_frames_are_torch_memory(video_dir):
    with open_video(video_dir / "h264.mp4", backend="decord", short_side=24) as reader:
        out = reader.frames_through([0, 1], lambda frames: (own_memory(frames), frames.shape))
    assert out == (True, torch.Size([2, 24, 32, 3]))


def test_pyav_and_fallback_readers_apply_fn_to_their_frames(video_dir, frame_index):
    reader = PyAVReader(str(video_dir / "h264.mp4"))
    assert reader.frames_through([4, 2], lambda f: [frame_index(x) for x in f]) == [4, 2]
