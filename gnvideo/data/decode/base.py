"""The reader interface shared by the decord and PyAV readers: :class:`VideoReader`, sizes, rotation, resizing and
the frame-count check. See :mod:`gnvideo.data.decode` for what the readers guarantee."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from .errors import VideoDecodeError, truncation_reason

T = TypeVar("T")


def shares_memory(result: object, buffer: torch.Tensor) -> bool:
    """Whether a tensor in ``result`` (a tensor, or a tuple/list/dict of values, or an object's attributes) uses
    ``buffer``'s memory."""
    if isinstance(result, torch.Tensor):
        return result.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr()
    if isinstance(result, dict):
        return any(shares_memory(v, buffer) for v in result.values())
    if isinstance(result, (tuple, list)):
        return any(shares_memory(v, buffer) for v in result)
    if hasattr(result, "__dict__"):
        return any(shares_memory(v, buffer) for v in vars(result).values())
    return False


def scaled_size(height: int, width: int, short_side: int | None) -> tuple[int, int]:
    """(height, width) after scaling so the short side is ``short_side`` (unchanged for None); even-rounded."""
    if short_side is None:
        return height, width
    if height <= width:
        return short_side, max(1, round(width * short_side / height))
    return max(1, round(height * short_side / width)), short_side


class VideoReader:
    """Common interface; use :func:`open_video` to get one.

    Attributes:
        path: the file.
        backend: "decord" or "pyav" (the one actually used; "pyav" after a decord failure).
        frame_count: decodable frames of the video (the container's count until a read proves it wrong); a clip's
            length is ``num_frames`` everywhere else.
        fps: average frames per second.
        rotation: display rotation applied, degrees counter-clockwise (0, 90, 180 or 270).
        num_repeated: total frames returned as repeats of the last frame because an index was past the end.
        last_num_repeated: the same for the latest ``frames`` call only.
    """

    backend = "none"

    def __init__(self, path: str, short_side: int | None = None) -> None:
        self.path = path
        self.short_side = short_side
        self.frame_count = 0
        self.fps = 0.0
        self.rotation = 0
        self.num_repeated = 0
        self.last_num_repeated = 0

    @property
    def duration(self) -> float:
        """Length in seconds (frame_count / fps)."""
        return self.frame_count / self.fps if self.fps > 0 else 0.0

    def _clamp(self, indices: Sequence[int]) -> list[int]:
        idx = [int(i) for i in indices]
        if any(i < 0 for i in idx):
            raise ValueError(f"negative frame index in {idx} for {self.path}")
        if self.frame_count <= 0:
            raise VideoDecodeError("no decodable frames", self.path)
        last = self.frame_count - 1
        self.last_num_repeated = sum(i > last for i in idx)
        self.num_repeated += self.last_num_repeated
        return [min(i, last) for i in idx]

    def frames(self, indices: Sequence[int]) -> torch.Tensor:
        """Decode the given frame indices.

        Args:
            indices: frame numbers (any order, repeats allowed); indices past the end give the last frame.

        Returns:
            uint8 tensor (T, H, W, 3), RGB, T = len(indices), upright, short side scaled if requested.
        """
        raise NotImplementedError

    def frames_through(self, indices: Sequence[int], fn: Callable[[torch.Tensor], T], close: bool = False) -> T:
        """``fn(frames)`` for the frames of ``indices`` (as :meth:`frames` gives them), e.g. a crop.

        A reader may hand ``fn`` its own decoded buffer without copying it (decord does; a sandboxed reader hands it
        its shared memory file), so ``fn`` must not keep the frames: what it returns is kept (copied where it shares
        the frames' memory), the frames are not. With ``close``, this is the file's last read and the reader is
        closed after it (a sandboxed reader frees the decoder in the same request, see :meth:`frames_and_close`).
        """
        try:
            return fn(self.frames(indices))
        finally:
            if close:
                self.close()

    def frames_and_close(self, indices: Sequence[int]) -> torch.Tensor:
        """:meth:`frames`, then :meth:`close`: the last read of a file. A sandboxed reader does both in one request
        and frees the decoder before it copies the frames over (freed after the copy, the close took ~2.5 ms longer
        per 32-frame clip, see README)."""
        try:
            return self.frames(indices)
        finally:
            self.close()

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, frame_count={self.frame_count}, fps={self.fps:.3f}, "
                f"rotation={self.rotation})")


def rotate_frames(frames: torch.Tensor, rotation: int) -> torch.Tensor:
    """Rotate (T, H, W, 3) counter-clockwise by ``rotation`` degrees (rounded to a multiple of 90)."""
    k = round(rotation / 90) % 4
    return torch.rot90(frames, k, dims=(1, 2)).contiguous() if k else frames


def resize_frames(frames: torch.Tensor, short_side: int | None) -> torch.Tensor:
    """Scale uint8 (T, H, W, 3) so the short side is ``short_side`` (bilinear, antialiased)."""
    if short_side is None:
        return frames
    h, w = frames.shape[1:3]
    size = scaled_size(h, w, short_side)
    if size == (h, w):
        return frames
    from torchvision.transforms.v2 import functional as F

    out = F.resize(frames.permute(0, 3, 1, 2), list(size), antialias=True)
    return out.permute(0, 2, 3, 1).contiguous()


def check_count(reader: VideoReader, decoded: int, announced: int) -> None:
    """Raise when ``decoded`` frames are clearly fewer than announced (the rule of :mod:`.errors`)."""
    reason = truncation_reason(decoded, announced)
    if reason is not None:
        raise VideoDecodeError(reason, reader.path)


__all__ = ["VideoReader", "check_count", "resize_frames", "rotate_frames", "scaled_size", "shares_memory"]
