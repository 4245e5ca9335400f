"""Cut, turn upright, resize and re-encode one source video: the encoding step of ``gnvideo-prepare-kinetics``.

Frames are decoded with PyAV, timed from the source's own timestamps (or counted, where those are in decode order:
:func:`.container.times_in_decode_order`, the rule the readers follow), and written through
:class:`.writer.VideoWriter` (h264/yuv420p, atomic temp file + rename).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path

from .container import announced_count, frame_rate, times_in_decode_order
from .errors import VideoDecodeError, check_file, decode_error_reason, ffmpeg_message, truncation_reason
from .keyframes import encoder_settings, keyframe_layout
from .writer import VideoWriter

#: keyframe interval (frames) of prepared videos: one clip span of 32x2 and 64x1 (README, "Data loading")
DEFAULT_KEYINT = 64


def prepared_x264_params(keyint: int | None = DEFAULT_KEYINT, cabac: bool = False) -> dict[str, object]:
    """x264 settings for random clip access: a keyframe at least every ``keyint`` frames (None or 0: x264's
    default, 250; scene cuts may add keyframes) and CAVLC entropy coding unless ``cabac`` (faster to decode, a few
    percent larger)."""
    params: dict[str, object] = {}
    if keyint:
        params["keyint"] = int(keyint)
    if not cabac:
        params["cabac"] = 0
    return params


def needs_reencode(path: str | os.PathLike, keyint: int | None = DEFAULT_KEYINT, cabac: bool = False) -> bool:
    """Whether a video lacks the settings of :func:`prepared_x264_params`: a keyframe interval above ``keyint``, or
    (when CAVLC is asked for) CABAC as x264 recorded it in the file. Reads the header and first bytes only."""
    if keyint and keyframe_layout(path).max_interval > keyint:
        return True
    return not cabac and encoder_settings(path).get("cabac", "0") != "0"


def transcode(src: str | os.PathLike, dst: str | os.PathLike, start: float, end: float | None,
              short_side: int | None = 256, upscale: bool = True, crf: int = 23, preset: str = "veryfast",
              threads: int = 1, x264_params: Mapping[str, object] | None = None,
              progress: Callable[[], None] | None = None) -> int:
    """Cut ``[start, end)`` seconds of ``src``, turn it upright, resize to short side ``short_side``, encode h264.

    ``end`` None: to the end of the source; ``short_side`` None: keep the source's size. ``x264_params`` are x264
    settings (``{"keyint": 64, "cabac": 0}``: a keyframe at least every 64 frames, CAVLC entropy coding), on top of
    ``crf`` and ``preset``. ``dst`` may be ``src`` itself: the source is read to the end before the new file
    replaces it (atomically).

    The output has a constant frame rate equal to the source's average rate; output frame ``j`` (at ``start + j /
    rate``) is the source frame on screen at that time, rounded to the nearest frame, so a constant-rate source gives
    each of its frames exactly once (also with millisecond timestamps, as in MKV, and for AVI files whose packet
    times are in decode order, which are numbered by counting). Variable-rate sources are resampled. Rotation metadata
    is applied to the pixels (the output has none). Audio is dropped. Written to a hidden temp file and renamed.
    ``progress`` (if given) is called for every decoded frame (the hang clock of :func:`.pool.isolated_map`).

    Returns:
        Number of frames written.

    Raises:
        VideoDecodeError: the source is broken by the rule of :mod:`.errors` (a decode error, or
            truncated), has no video stream, or has no frame in the interval; ``reason`` is the check_videos text.
    """
    import av
    from av.video.reformatter import VideoReformatter

    src, dst = str(src), Path(dst)
    check_file(src)
    try:
        inp = av.open(src)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"cannot open: {ffmpeg_message(err)}", src) from err
    with inp:
        if not inp.streams.video:
            raise VideoDecodeError("no video stream", src)
        ist = inp.streams.video[0]
        ist.thread_type = "AUTO"
        rate = frame_rate(ist)
        if rate is None or not 1 <= rate <= 240:  # no usable rate in the header: assume 30 fps
            rate = Fraction(30)
        step = 1 / float(rate)
        count_frames = times_in_decode_order(inp, ist)
        t0 = float(ist.start_time * ist.time_base) if ist.start_time is not None and ist.time_base else 0.0
        if start > 0 and not count_frames:
            inp.seek(int((start + t0) / ist.time_base), stream=ist, backward=True, any_frame=False)
        n_out = math.inf if end is None else max(1, round((end - start) * float(rate)))

        def slot(t: float) -> int:  # the output frame whose time is nearest to t
            return math.floor((t - start) / step + 0.5)

        out: VideoWriter | None = None
        rotation = 0
        converters = (VideoReformatter(), VideoReformatter())  # one each for the video (see _upright)

        def emit(frame, until: int) -> None:
            converted = None
            while out.frames_written < min(until, n_out):
                if converted is None:  # convert lazily: frames before the cut point are never converted
                    converted = _upright(frame, *out.size, rotation, converters)
                out.write(converted)

        try:
            prev, prev_t, t, decoded = None, None, None, 0
            for k, frame, t in _timed_frames(inp, ist, src, step, t0, count_frames):
                decoded = k + 1
                if progress is not None:
                    progress()
                if prev_t is not None and t <= prev_t:  # never back in time (decode-order timestamps)
                    t = prev_t + step
                if out is None:
                    rotation = int(round(frame.rotation or 0)) % 360
                    w, h = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
                    w, h = _target_size(w, h, short_side, upscale)
                    out = VideoWriter(dst, rate, width=w, height=h, crf=crf, preset=preset, threads=threads,
                                      x264_params=x264_params)
                s = slot(t)
                if prev is not None:
                    emit(prev, s)  # the previous frame stays on screen until this one starts
                elif s > 0:
                    emit(frame, s)  # nothing decoded before the cut point: hold the first frame
                if s >= n_out:
                    break
                prev, prev_t = frame, t
            else:
                if prev is not None:
                    emit(prev, slot(prev_t) + 1)
                    _check_not_truncated(inp, ist, src, prev_t, rate, decoded if count_frames or start <= 0 else None)
            if out is None or out.frames_written == 0:
                raise VideoDecodeError(f"no frames in [{start}, {end}] s", src)
        except BaseException:
            if out is not None:
                out.abort()
            raise
        out.close()
    return out.frames_written


def _timed_frames(inp, ist, src: str, step: float, t0: float, count_frames: bool):
    """``(k, frame, t)``: decoded frames with their time in seconds from the stream start (frame count x step when
    ``count_frames``); a decode error raises the check_videos verdict."""
    import av

    k, t = -1, None
    demux = inp.demux(ist)
    while True:
        try:
            packet = next(demux)
            frames = packet.decode()
        except StopIteration:
            return
        except av.error.FFmpegError as err:
            if k < 0:
                raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", src) from err
            at = k + 1 if count_frames or t is None else round(t / step) + 1
            raise VideoDecodeError(decode_error_reason(at, err), src) from err
        for frame in frames:
            k += 1
            if count_frames or frame.time is None:
                t = k * step if count_frames or t is None else t + step
            else:
                t = frame.time - t0
            yield k, frame, t


def _check_not_truncated(inp, ist, src: str, last_time: float, rate: Fraction, decoded: int | None) -> None:
    """The source ended: raise the check_videos verdict when it holds clearly fewer frames than announced."""
    announced = announced_count(inp, ist, float(rate), video_only=True)
    reason = truncation_reason(decoded if decoded is not None else round(last_time * float(rate)) + 1, announced)
    if reason is not None:
        raise VideoDecodeError(reason, src)


def _upright(frame, width: int, height: int, rotation: int, converters: tuple):
    """``frame`` as yuv420p of the output size (width x height, upright), its rotation metadata applied.
    ``converters``: two ``VideoReformatter`` kept for the whole video (``frame.reformat`` makes a new scaler for
    every frame; ``benchmarks/bench_reformat.py`` measures the difference)."""
    import av
    import numpy as np

    scale, to_yuv = converters
    if rotation == 0:
        return scale.reformat(frame, width=width, height=height, format="yuv420p", interpolation="AREA")
    stored_w, stored_h = (height, width) if rotation in (90, 270) else (width, height)
    rgb = scale.reformat(frame, width=stored_w, height=stored_h, format="rgb24", interpolation="AREA").to_ndarray()
    upright = np.ascontiguousarray(np.rot90(rgb, rotation // 90))  # counter-clockwise, as the reader does
    return to_yuv.reformat(av.VideoFrame.from_ndarray(upright, format="rgb24"), format="yuv420p")


def _target_size(width: int, height: int, short_side: int | None, upscale: bool) -> tuple[int, int]:
    short = min(width, height)
    if short_side is None or (short <= short_side and not upscale):
        scale = 1.0
    else:
        scale = short_side / short
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


__all__ = ["DEFAULT_KEYINT", "needs_reencode", "prepared_x264_params", "transcode"]
