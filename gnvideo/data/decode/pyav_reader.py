"""PyAV reading, exact for every container: frames numbered in decoder output order (as decord numbers them), by
packet timestamps when they are usable and by counting from the start when they are not."""

from __future__ import annotations

import bisect
from collections.abc import Container, Sequence

import numpy as np
import torch

from .base import VideoReader, check_count, rotate_frames, scaled_size
from .container import announced_count, frame_rate, times_in_decode_order
from .errors import VideoDecodeError, check_file, decode_error_reason, ffmpeg_message
from .keyframes import parse_x264_settings


class _MidStreamError(Exception):
    """FFmpeg failed on a packet after ``produced`` frames had come out of the decoder."""

    def __init__(self, err: Exception, produced: int) -> None:
        super().__init__(str(err))
        self.err, self.produced = err, produced


def _iter_frames(container, stream, path: str, wanted_pts: Container[int] | None = None):
    """Decoded frames in output order. An error before the first frame raises :class:`VideoDecodeError`; one after
    it raises :class:`_MidStreamError` (the caller knows which frame that is). The demuxer's end ends the stream.
    With ``wanted_pts``, the packet of a frame not in it is not decoded when no other frame refers to it
    (``skip_frame="NONREF"``): those frames do not come out."""
    import av

    produced = 0
    context = stream.codec_context
    for packet in container.demux(stream):
        if wanted_pts is not None:
            context.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in wanted_pts else "NONREF"
        try:
            frames = packet.decode()
        except av.error.FFmpegError as err:
            if not produced:
                raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", path) from err
            raise _MidStreamError(err, produced) from err
        for frame in frames:
            produced += 1
            yield frame


def pyav_probe(path: str) -> tuple[int, float, int, int]:
    """(frame count estimate, fps, rotation, announced count) from the container; decodes the first frame for the
    rotation. The estimate may come from the container's duration (all streams, audio too); the announced count only
    from the video stream's own count or duration (0 when it has neither), and only it can make a file truncated."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoDecodeError("no video stream", path)
            stream = container.streams.video[0]
            rate = frame_rate(stream)
            fps = float(rate) if rate else 0.0
            count = announced_count(container, stream, fps)
            announced = announced_count(container, stream, fps, video_only=True)
            if count <= 0:  # no count or duration in the container: count the packets
                count = sum(1 for packet in container.demux(stream) if packet.size)
                container.seek(0)
            rotation = 0
            try:
                for frame in _iter_frames(container, stream, path):
                    rotation = int(round(frame.rotation or 0))
                    break
                else:
                    raise VideoDecodeError("no decodable frames", path)
            except _MidStreamError:  # not reached: the first frame came out
                pass
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise VideoDecodeError(f"cannot open: {ffmpeg_message(err)}", path) from err
    return count, fps, rotation % 360, announced


def pyav_header(path: str) -> tuple[int, bool]:
    """(announced frame count, whether packet times are in decode order: :func:`.container.times_in_decode_order`)
    from the container header, without decoding; (0, False) when unknown or unreadable."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = frame_rate(stream)
            count = announced_count(container, stream, float(rate) if rate else 0.0, video_only=True)
            return count, times_in_decode_order(container, stream)
    except (av.error.FFmpegError, IndexError, UnicodeDecodeError):
        return 0, False


class PyAVReader(VideoReader):
    """PyAV decoding with exact frame numbers for every codec/container, including VFR and wrong counts.

    Fast path: the packets' presentation times (read without decoding) give frame i's timestamp; decoding starts at
    the keyframe one GOP before the first wanted frame (so open-GOP leading frames decode too) and frames are picked
    by timestamp. When timestamps are missing or duplicated, or the decoded frames' timestamps are not increasing
    (h264 in AVI stores decode-order times), or a wanted frame does not come out, the reader decodes from the start
    and counts frames, which is always exact; a file whose timestamps failed once is always read that way.
    """

    backend = "pyav"

    def __init__(self, path: str, short_side: int | None = None, probe: tuple | None = None) -> None:
        super().__init__(path, short_side)
        check_file(path)
        self.frame_count, self.fps, self.rotation, *announced = probe or pyav_probe(path)
        self.announced = announced[0] if announced else self.frame_count  # frames the video stream announces
        self._count_known = False
        self._timestamps_usable = True
        self._converter = None
        self._closed_gop: bool | None = None  # x264 wrote closed GOPs (open_gop=0), from the first packet

    def _to_array(self, frame) -> np.ndarray:
        """One frame as RGB (H, W, 3), through the reader's one converter (``frame.to_ndarray`` makes a new scaler
        for every frame; ``benchmarks/bench_reformat.py`` measures the difference)."""
        if self._converter is None:
            from av.video.reformatter import VideoReformatter

            self._converter = VideoReformatter()
        kwargs = {"format": "rgb24"}
        if self.short_side is not None:  # size of the stored (unrotated) frame; a 90-degree turn keeps the short side
            kwargs["height"], kwargs["width"] = scaled_size(frame.height, frame.width, self.short_side)
        return self._converter.reformat(frame, **kwargs).to_ndarray()

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        wanted = [int(i) for i in indices]
        if any(i < 0 for i in wanted):
            raise ValueError(f"negative frame index in {wanted} for {self.path}")
        if wanted and self._timestamps_usable:
            out = self._frames_by_seeking(wanted)
            if out is not None:
                return out
        return self._frames_sequential(wanted)

    def _frames_by_seeking(self, wanted: list[int]) -> torch.Tensor | None:
        import av

        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.codec_context.thread_count = 1  # one core per reader, as decord (a DataLoader worker's)
                start = stream.start_time
                pts, keys = [], []
                for packet in container.demux(stream):
                    if packet.size == 0 or packet.is_discard:
                        continue
                    if packet.pts is None:
                        self._timestamps_usable = False
                        return None
                    if self._closed_gop is None:  # x264 writes its settings into the first packet
                        self._closed_gop = parse_x264_settings(bytes(packet)).get("open_gop") == "0"
                    if start is not None and packet.pts < start:
                        continue
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
                pts.sort()
                keys.sort()
                if not pts or not keys or len(set(pts)) != len(pts) or keys[0] != pts[0]:
                    self._timestamps_usable = False
                    return None
                check_count(self, len(pts), self.announced)
                end = len(pts) - 1
                clamped = [min(i, end) for i in wanted]
                first, last = pts[min(clamped)], pts[max(clamped)]
                # from the keyframe holding `first`; one before it unless x264 wrote a closed GOP (open-GOP leading
                # frames refer to the GOP before)
                k = max(bisect.bisect_right(keys, first) - (1 if self._closed_gop else 2), 0)
                index_of = {pts[i]: i for i in set(clamped)}
                got: dict[int, np.ndarray] = {}
                container.seek(keys[k], stream=stream, backward=True, any_frame=False)
                previous = None
                try:
                    for frame in _iter_frames(container, stream, self.path, wanted_pts=index_of):
                        if frame.pts is None or (previous is not None and frame.pts <= previous):
                            self._timestamps_usable = False  # decode-order timestamps: count frames instead
                            return None
                        previous = frame.pts
                        if frame.pts in index_of:
                            got[index_of[frame.pts]] = self._to_array(frame)
                        if frame.pts >= last and len(got) == len(index_of):
                            break
                except _MidStreamError as err:
                    failed = bisect.bisect_right(pts, previous) if previous is not None else 0
                    raise VideoDecodeError(decode_error_reason(failed, err.err), self.path) from err.err
        except av.error.FFmpegError:
            return None
        except VideoDecodeError as err:
            if err.reason.startswith("cannot decode"):  # nothing came out after the seek: try from the start
                return None
            raise
        if len(got) != len(index_of):
            return None
        self.frame_count = len(pts)
        self._clamp(wanted)
        return rotate_frames(torch.from_numpy(np.stack([got[i] for i in clamped])), self.rotation)

    def _frames_sequential(self, wanted: list[int]) -> torch.Tensor:
        import av

        target = max(wanted)
        if self._count_known:
            target = min(target, self.frame_count - 1)
        needed = set(wanted)
        got: dict[int, np.ndarray] = {}
        last_frame, count = None, 0
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for frame in _iter_frames(container, stream, self.path):
                    if count in needed:
                        got[count] = self._to_array(frame)
                    last_frame = frame
                    count += 1
                    if count > target:
                        break
        except _MidStreamError as err:
            raise VideoDecodeError(decode_error_reason(err.produced, err.err), self.path) from err.err
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"cannot decode: {ffmpeg_message(err)}", self.path) from err
        if count == 0:
            raise VideoDecodeError("no decodable frames", self.path)
        if count <= target:  # the stream ended before the requested index: now the real count is known
            check_count(self, count, self.announced)
            self.frame_count, self._count_known = count, True
        elif count > self.frame_count:
            self.frame_count = count
        end = count - 1
        if end not in got:
            got[end] = self._to_array(last_frame)
        self._clamp(wanted)
        out = torch.from_numpy(np.stack([got[min(i, end)] for i in wanted]))
        return rotate_frames(out, self.rotation)


__all__ = ["PyAVReader", "pyav_header", "pyav_probe"]
