"""Decoding and encoding video: the only place that touches FFmpeg (decord, PyAV). Imports nothing else of gnvideo.

Modules, lowest first: :mod:`.errors` (the one definition of a broken video), :mod:`.mp4meta` and :mod:`.container`
(header facts), :mod:`.keyframes` (keyframe positions, frames a clip read decodes, x264's recorded settings),
:mod:`.base` (the :class:`VideoReader` interface), :mod:`.pyav_reader` and :mod:`.decord_reader`, :mod:`.backends`
(``open_video``, the entry point), :mod:`.check` (whole-file checks); :mod:`.writer` (the one video writer) and
:mod:`.transcode` (cut, turn upright, resize and re-encode a source video, with the prepared videos' x264 settings);
:mod:`.sandbox` (``open_sandboxed``: the same reading in a child process, so a decoder that crashes or hangs costs
one file) and :mod:`.pool` (``isolated_map``: whole-file jobs in worker processes with a hang limit, for the data
tools).

Reading: frame-accurate, decord first and PyAV as the fallback.

``open_video(path)`` returns a :class:`VideoReader` whose ``frames(indices)`` gives uint8 (T, H, W, 3) RGB frames, where
index ``i`` is the i-th frame the decoder puts out (presentation order), which is how decord numbers frames, also for
variable-frame-rate files and for AVI files whose packet timestamps are in decode order. What it copes with:

- rotation metadata (phone videos): applied, so frames come out upright. Files with rotation metadata are read with
  PyAV: decord2 3.4.0 and decord 0.6.0 rotate correctly at most sizes but fail with a size-mismatch error at others
  (64x48 turned by 90 or 270 degrees). ``backend="auto"`` finds the rotation in the MP4/MOV header without decoding;
  for other containers except AVI/MPEG it asks PyAV, which opens the file and decodes one frame (~3 ms).
- a container whose frame count is off by a frame or two: reading stops at the real end and ``frame_count`` shrinks
  to the real count. Indices past the end repeat the last frame (a video shorter than a clip); ``last_num_repeated``
  / ``num_repeated`` count those frames.
- ``short_side``: frames are scaled (aspect kept) so the short side is ``short_side`` pixels. PyAV scales while
  converting each frame (the full-size RGB clip never exists); with decord the batch is scaled right after decoding
  (decord's own ``width``/``height`` option fails with a size-mismatch error for some sizes, e.g. 32x24 and 48x36
  in decord2 3.4.0).
- broken files (the definition is in :mod:`.errors`): missing -> :class:`FileNotFoundError`; empty,
  undecodable, a decode error on any frame read, or clearly fewer frames than the container announces ->
  :class:`VideoDecodeError`, naming the file and the reason. A broken frame is never replaced by a neighbour. Under
  :func:`open_sandboxed`, a decoder that crashes or hangs is a :class:`VideoDecodeError` too ("decoder crashed:
  signal 11 (SIGSEGV)", "decoder hung: no frames after 60 s").
"""

from importlib import import_module

#: public name -> the submodule that defines it (imported on first use, so importing this package stays light)
_EXPORTS = {
    "BACKENDS": ".backends",
    "open_video": ".backends",
    "VideoReader": ".base",
    "scaled_size": ".base",
    "video_problem": ".check",
    "DecordReader": ".decord_reader",
    "decord_available": ".decord_reader",
    "VideoDecodeError": ".errors",
    "check_file": ".errors",
    "crash_reason": ".errors",
    "hang_reason": ".errors",
    "isolated_map": ".pool",
    "problem_reason": ".errors",
    "truncation_reason": ".errors",
    "PyAVReader": ".pyav_reader",
    "open_sandboxed": ".sandbox",
    "sandbox_available": ".sandbox",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)
