"""Where a video's keyframes are, what that costs a clip reader, and which x264 settings wrote the file.

A reader reaches frame ``i`` by seeking to the keyframe at or before it and decoding every frame from there, so a
random clip costs its span plus, on average, half a keyframe interval: with x264's default (a keyframe every 250
frames, i.e. one or two in a 10 s Kinetics clip) that is several times the frames the clip uses.
:func:`keyframe_layout` reads the keyframe positions without decoding (the ``stss`` box of MP4/MOV headers, else the
packet flags through PyAV's demuxer) and :meth:`KeyframeLayout.frames_decoded` counts the frames a read decodes, the
way decord's ``get_batch`` reads: from the keyframe before each wanted frame, or on from the previous wanted frame
when that lies in the same keyframe interval. :func:`encoder_settings` reads the settings x264 writes into the
first frame.
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import VideoDecodeError, check_file, ffmpeg_message
from .mp4meta import ISO_BMFF_EXTENSIONS, mp4_media_start, mp4_sync_samples

_X264_MESSAGE = re.compile(rb"x264 - core (\d+)[^\x00]*?options: ([\x20-\x7e]*)")


@dataclass(frozen=True)
class KeyframeLayout:
    """Keyframe positions of one video.

    Attributes:
        frame_count: frames of the video.
        keyframes: frame numbers of its keyframes, increasing, starting at 0 (a stream that starts without a
            keyframe counts as having one at 0: its first frames decode from the start).
    """

    frame_count: int
    keyframes: tuple[int, ...]

    @property
    def intervals(self) -> list[int]:
        """Frames from each keyframe to the next (the last one: to the end of the video)."""
        bounds = list(self.keyframes) + [self.frame_count]
        return [b - a for a, b in zip(bounds, bounds[1:]) if b > a]

    @property
    def max_interval(self) -> int:
        """The longest keyframe interval in frames (the whole video when it has one keyframe)."""
        return max(self.intervals, default=self.frame_count)

    def frames_decoded(self, indices: Sequence[int]) -> int:
        """Frames a fresh reader decodes to return ``indices`` (read in increasing order; indices past the end read
        the last frame)."""
        last = max(self.frame_count - 1, 0)
        total, previous, previous_key = 0, -1, -1
        for i in sorted({min(max(int(i), 0), last) for i in indices}):
            key = self.keyframes[bisect.bisect_right(self.keyframes, i) - 1]
            if key == previous_key and i > previous:
                total += i - previous  # on from the previous wanted frame: same interval, no seek
            else:
                total += i - key + 1  # seek to the keyframe, decode up to i
            previous, previous_key = i, key
        return total

    def mean_frames_decoded(self, num_frames: int, sampling_rate: int, max_starts: int = 64) -> float:
        """Frames decoded per training clip (``num_frames`` frames, ``sampling_rate`` apart) on average over clip
        starts spread evenly over the video (at most ``max_starts`` of them), the training sampler's draw."""
        span = (num_frames - 1) * sampling_rate + 1
        room = max(self.frame_count - span, 0)
        count = min(room + 1, max_starts)
        starts = [round(k * room / (count - 1)) for k in range(count)] if count > 1 else [0]
        clips = [[s + j * sampling_rate for j in range(num_frames)] for s in starts]
        return sum(self.frames_decoded(c) for c in clips) / len(clips)


def _layout(frame_count: int, keyframes: Sequence[int]) -> KeyframeLayout:
    keys = sorted({k for k in keyframes if 0 <= k < frame_count} | {0})
    return KeyframeLayout(frame_count, tuple(keys))


def keyframe_layout(path: str | os.PathLike) -> KeyframeLayout:
    """Keyframe positions of a video, without decoding: from the MP4/MOV header when it has a sample table (~0.1 ms),
    else from the packet flags (PyAV demuxes the whole file, a few ms for a 10 s clip).

    Raises:
        FileNotFoundError: missing file.
        VideoDecodeError: empty, unreadable, or no video stream.
    """
    path = os.fspath(path)
    check_file(path)
    if os.path.splitext(path)[1].lower() in ISO_BMFF_EXTENSIONS:
        header = mp4_sync_samples(path)
        if header is not None:
            return _layout(*header)
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream", path)
            stream = container.streams.video[0]
            times, keys = [], []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                times.append(packet.pts)
                keys.append(packet.is_keyframe)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"cannot open: {ffmpeg_message(err)}", path) from err
    if not times:
        raise VideoDecodeError("no video packets", path)
    if None in times or len(set(times)) != len(times):  # no usable presentation times: decode order
        return _layout(len(times), [i for i, key in enumerate(keys) if key])
    position = {t: i for i, t in enumerate(sorted(times))}  # display order, as the readers number frames
    return _layout(len(times), [position[t] for t, key in zip(times, keys) if key])


def parse_x264_settings(data: bytes) -> dict[str, str]:
    """The settings in x264's message (``x264 - core N ... options: keyint=250 ...``) found in ``data``:
    ``{"encoder": "x264 core N", "keyint": "250", ...}``; empty when there is none."""
    match = _X264_MESSAGE.search(data)
    if match is None:
        return {}
    settings = {"encoder": f"x264 core {match.group(1).decode()}"}
    for item in match.group(2).decode("ascii").split():
        name, sep, value = item.partition("=")
        if sep:
            settings[name] = value
    return settings


def encoder_settings(path: str | os.PathLike) -> dict[str, str]:
    """x264's settings as written into the video (:func:`parse_x264_settings`), read from the first bytes of the
    media data (MP4/MOV) or the first video packet; empty for other encoders or an unreadable file."""
    path = os.fspath(path)
    if os.path.splitext(path)[1].lower() in ISO_BMFF_EXTENSIONS:
        found = parse_x264_settings(mp4_media_start(path))
        if found:
            return found
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size:
                    return parse_x264_settings(bytes(packet))
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError, OSError):
        pass
    return {}


__all__ = ["KeyframeLayout", "encoder_settings", "keyframe_layout", "parse_x264_settings"]
