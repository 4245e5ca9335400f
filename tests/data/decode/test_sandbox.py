"""The decode sandbox: the same frames and errors as in-process reading; a crash or hang costs one file, not the
process, and is named with its reason; the next file decodes in a fresh child."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from gnvideo.data.decode import VideoDecodeError, open_sandboxed, open_video, sandbox_available
from gnvideo.data.decode import sandbox as sandbox_module

pytestmark = pytest.mark.skipif(not sandbox_available(), reason="needs os.fork")


@pytest.mark.parametrize("name", ["h264.mp4", "vp9.webm", "rot90.mp4", "short.mp4", "h264.avi"])
def test_same_frames_and_counts_as_in_process(video_dir, name):
    indices = [0, 3, 3, 1, 9, 30, 2]
    with open_video(video_dir / name, short_side=32) as a, open_sandboxed(video_dir / name, short_side=32) as b:
        assert (b.frame_count, b.fps, b.rotation) == (a.frame_count, a.fps, a.rotation)
        fa, fb = a.frames(indices), b.frames(indices)
        assert torch.equal(fa, fb)
        assert (b.backend, b.num_repeated, b.last_num_repeated) == (a.backend, a.num_repeated, a.last_num_repeated)


@pytest.mark.parametrize("name", ["zero.mp4", "garbage.mp4", "truncated.mp4", "corrupt.mp4"])
def test_broken_files_raise_what_the_reader_raises(video_dir, name):
    def verdict(opener):
        try:
            with opener(video_dir / name) as r:
                r.frames(range(r.frame_count))
        except VideoDecodeError as err:
            return err.reason, err.path
        return None

    assert verdict(open_sandboxed) == verdict(open_video) is not None
    with pytest.raises(FileNotFoundError):
        open_sandboxed(video_dir / "no such file.mp4")
    with pytest.raises(ValueError, match="backend"):
        open_sandboxed(video_dir / "h264.mp4", backend="nope")


def test_crash_and_hang_cost_one_file(video_dir, faulty_decoder):
    faults, opened = faulty_decoder
    faults.update({"short.mp4": "crash", "vp9.webm": "hang"})
    with pytest.raises(VideoDecodeError) as crash:
        open_sandboxed(video_dir / "short.mp4")
    assert crash.value.reason == "decoder crashed: signal 11 (SIGSEGV)"
    assert crash.value.path == str(video_dir / "short.mp4")
    with open_sandboxed(video_dir / "h264.mp4") as r:  # a new child
        assert r.frames([0, 1]).shape == (2, 48, 64, 3)
    t0 = time.monotonic()
    with pytest.raises(VideoDecodeError) as hang:
        open_sandboxed(video_dir / "vp9.webm", timeout=1.5)
    assert hang.value.reason == "decoder hung: no frames after 1.5 s" and hang.value.path.endswith("vp9.webm")
    assert time.monotonic() - t0 < 10
    with open_sandboxed(video_dir / "h264.mp4") as r:
        assert r.frames([5]).shape == (1, 48, 64, 3)
    assert (opened("short.mp4"), opened("vp9.webm"), opened("h264.mp4")) == (1, 1, 2)


def test_crash_while_reading_or_closing_names_that_file(video_dir, monkeypatch):
    from gnvideo.data.decode.decord_reader import DecordReader

    sandbox_module.stop_sandbox()
    monkeypatch.setattr(DecordReader, "_read", lambda self, idx, fn: os.abort())  # frames and frames_through
    with open_sandboxed(video_dir / "h264.mp4", backend="decord") as r:
        with pytest.raises(VideoDecodeError, match=r"h264.mp4: decoder crashed: signal 6 \(SIGABRT\)"):
            r.frames([0])
        assert not r.is_open  # closing a reader whose child died sends nothing
    monkeypatch.undo()
    sandbox_module.stop_sandbox()
    monkeypatch.setattr(DecordReader, "close", lambda self: os.kill(os.getpid(), signal.SIGBUS))
    r = open_sandboxed(video_dir / "mpeg4.avi", backend="decord")
    r.frames([0])
    with pytest.raises(VideoDecodeError, match=r"mpeg4.avi: decoder crashed: signal 7 \(SIGBUS\)"):
        r.close()
    sandbox_module.stop_sandbox()


def test_a_child_that_died_between_requests_is_not_blamed(video_dir):
    with open_sandboxed(video_dir / "h264.mp4") as r:
        r.frames([0])
    box = sandbox_module.current_sandbox()
    os.kill(box.pid, signal.SIGKILL)
    time.sleep(0.2)
    with open_sandboxed(video_dir / "vp9.webm") as r:  # restarted without an error for this file
        assert r.frames([1]).shape == (1, 48, 64, 3)


def test_large_reads_grow_the_shared_file_and_views_are_exact(video_dir):
    with open_video(video_dir / "big.mp4") as a:
        expected = a.frames(range(50))
    with open_sandboxed(video_dir / "h264.mp4") as r:
        r.frames([0])
    with open_sandboxed(video_dir / "big.mp4", copy_frames=False) as r:  # 50 x 120 x 160 x 3: a larger file
        view = r.frames(range(50))
        assert torch.equal(view, expected)
    with open_sandboxed(video_dir / "big.mp4") as r:
        copy = r.frames(range(50))
    assert torch.equal(copy, expected)
    with open_sandboxed(video_dir / "h264.mp4") as r:
        r.frames(range(40))
    assert torch.equal(copy, expected)  # a copy is not overwritten by later reads


def test_a_forked_process_gets_its_own_child(video_dir):
    with open_sandboxed(video_dir / "h264.mp4") as r:
        r.frames([0])
    parent_child = sandbox_module.current_sandbox().pid
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a DataLoader worker, say
        code = 1
        try:
            with open_sandboxed(video_dir / "vp9.webm") as r:
                ok = r.frames([2]).shape == (1, 48, 64, 3)
            mine = sandbox_module.current_sandbox().pid
            os.write(write, f"{int(ok)} {mine}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    answer = os.read(read, 100).decode().split()
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    assert answer[0] == "1" and int(answer[1]) not in (parent_child, pid)
    assert sandbox_module.current_sandbox().pid == parent_child  # the parent's child was left alone
    with open_sandboxed(video_dir / "h264.mp4") as r:
        assert r.frames([3]).shape == (1, 48, 64, 3)


def test_one_open_file_per_process(video_dir):
    a = open_sandboxed(video_dir / "h264.mp4")
    b = open_sandboxed(video_dir / "vp9.webm")  # the child holds one file: opening b closed a
    assert not a.is_open and b.is_open
    with pytest.raises(ValueError, match="reader is closed"):
        a.frames([0])
    a.close()  # nothing to send
    with open_video(video_dir / "vp9.webm") as ref:
        assert torch.equal(b.frames([4]), ref.frames([4]))
    b.close()
    assert not b.is_open


def test_frames_and_close_frees_the_decoder_in_the_same_request(video_dir, monkeypatch):
    with open_video(video_dir / "big.mp4") as ref:
        expected = ref.frames([1, 7, 30])
    r = open_sandboxed(video_dir / "big.mp4")
    assert torch.equal(r.frames_and_close([1, 7, 30]), expected) and not r.is_open
    from gnvideo.data.decode.decord_reader import DecordReader

    sandbox_module.stop_sandbox()
    monkeypatch.setattr(DecordReader, "close", lambda self: os.abort())  # a crash while freeing the decoder
    r = open_sandboxed(video_dir / "h264.mp4", backend="decord")
    with pytest.raises(VideoDecodeError, match=r"h264.mp4: decoder crashed: signal 6"):
        r.frames_and_close([0])
    monkeypatch.undo()
    sandbox_module.stop_sandbox()
    monkeypatch.setattr(DecordReader, "close", lambda self: os.abort())
    r = open_sandboxed(video_dir / "corrupt.mp4", backend="decord")
    with pytest.raises(VideoDecodeError, match=r"corrupt.mp4: decoder crashed: signal 6"):  # a failed read is
        r.frames_and_close(range(50))  # closed in the same request too: its crash while freeing is its own
    monkeypatch.undo()
    sandbox_module.stop_sandbox()
    with open_sandboxed(video_dir / "h264.mp4") as r:
        assert r.frames_and_close([2]).shape == (1, 48, 64, 3)


def test_a_long_read_comes_in_decoder_reads_of_32_frames_and_equals_one_read(video_dir):
    """The child reads long requests 32 frames at a time into the shared file: the same frames, shape and repeat
    count as one read in process, with indices past the end (repeated frames) in several of the pieces."""
    with open_video(video_dir / "big.mp4") as ref:
        n = ref.frame_count
        indices = [*range(0, n, 1), *([n + 5] * 40)]  # more than 2 pieces of 32; the last 40 repeat the last frame
        expected = ref.frames(indices)
        repeated = ref.last_num_repeated
    with open_sandboxed(video_dir / "big.mp4") as r:
        got = r.frames(indices)
        assert torch.equal(got, expected) and r.last_num_repeated == repeated == 40
        assert r.num_repeated == 40
        assert torch.equal(r.frames_and_close(indices[:33]), expected[:33])


def test_a_frame_size_change_between_pieces_of_one_read_names_the_file():
    """The child's pieces of one long read must agree in frame size (a reader that switched backends mid-read could
    differ): otherwise the read fails with one line naming the file, and a closing read still frees the reader."""

    class Changing:
        path, last_num_repeated, closed = "/videos/odd.mp4", 0, False

        def frames_through(self, indices, fn, close=False):
            side = 8 if indices[0] == 0 else 6
            return fn(torch.zeros(len(indices), side, side, 3, dtype=torch.uint8))

        def close(self):
            self.closed = True

    shared = sandbox_module._SharedFrames()
    try:
        reader = Changing()
        with pytest.raises(VideoDecodeError, match=r"odd.mp4: frame size changed within one read"):
            sandbox_module._read_into(shared, reader, list(range(70)), close=True)
        assert reader.closed
    finally:
        shared.close()
