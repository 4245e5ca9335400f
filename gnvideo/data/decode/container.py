"""What the readers and the encoder both read from an open PyAV container: the frame rate, the frame count the video
stream announces, and whether packet times are in decode order (AVI with a reordering codec)."""

from __future__ import annotations

from fractions import Fraction


def frame_rate(stream) -> Fraction | None:
    """Average frames per second of a PyAV video stream: its average rate, else the guessed, else the base rate."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


def announced_count(container, stream, fps: float, video_only: bool = False) -> int:
    """Frames the container announces: the stream's count, else its duration x rate, else (unless ``video_only``)
    the container's duration x rate (all streams, audio too); 0 when unknown. Only the video-only count can make a
    file truncated."""
    count = int(stream.frames or 0)
    if count <= 0 and stream.duration and stream.time_base and fps:
        count = int(round(float(stream.duration * stream.time_base) * fps))
    if count <= 0 and container.duration and fps and not video_only:
        count = int(round(container.duration / 1e6 * fps))
    return count


def times_in_decode_order(container, stream) -> bool:
    """Whether the packet times are in decode order, so frames must be numbered by counting from the start: AVI
    stores no presentation times, and a codec that reorders frames (B-frames) then gives them out of order. decord's
    seeks land on neighbouring frames in such files."""
    return container.format.name == "avi" and bool(stream.codec_context.has_b_frames)


__all__ = ["announced_count", "frame_rate", "times_in_decode_order"]
