"""Clip transforms. On the CPU (DataLoader workers): uint8 frames (T, H, W, 3) -> uint8 clip (T, h, w, 3), a crop
(and a scale where it shrinks the frame). On the device: :class:`BatchTransform`, uint8 (N, T, h, w, 3) ->
normalised float32 (N, 3, T, h, w), batched, including the enlarging of training crops.

Layout: clips stay channels-last, (T, h, w, 3), the decoder's own layout and the memory layout of torchvision's uint8
resize output, so the worker never transposes a clip (a strided uint8 (3, T, h, w) copy costs as much as the resize);
the device does the permute to (N, 3, T, h, w) together with the float conversion.

Scaling and cropping are fused: the crop box is chosen in the coordinates of the scaled video and mapped back, and
``torchvision.transforms.v2.functional.resized_crop`` resizes only the cropped region (uint8, bilinear,
antialiased). The result equals scale-then-crop up to sub-pixel rounding of the box and costs a fraction of it.
Training crops usually enlarge (a 256-pixel video scaled to a short side in [256, 320]): then the worker only
crops, the box at source resolution goes into the top-left of the (T, crop, crop, 3) clip (zeros elsewhere) with
its side in the sample's ``box_size``, and :class:`BatchTransform` scales it up to the crop, bilinear, batched on the
device (``TrainTransform(upscale_on_device=True)``; the DataModule turns it on when training on an accelerator).
Enlarging needs no antialiasing, so this equals the CPU's uint8 resize up to its rounding (within one uint8 level).
A box that shrinks is scaled in the worker.

Train randomness comes from an explicit ``torch.Generator`` so a sample can be reproduced from its seed: the
horizontal flip is drawn there too (a bool per clip, the sample's ``flip``) and applied on the device by
:class:`BatchTransform`, so a flipped clip is the same whichever worker loads it and whatever device flips it.

Workers return uint8 clips (1 byte per value instead of 4 for float32: 4x fewer bytes through worker IPC, pinned
memory and the host-to-device copy); float conversion and mean/std normalisation run batched where the model runs,
in ``VideoClassifier.on_after_batch_transfer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F_nn
from torchvision.transforms.v2 import functional as F

from gnvideo.errors import ConfigError
from gnvideo.models.weights import IMAGENET_MEAN, IMAGENET_STD

#: Input mean / std (RGB, [0, 1] units) per weight source: ``imagenet`` for torchvision / timm 2D ImageNet weights,
#: ``pytorchvideo`` for pytorchvideo / PySlowFast / Non-local checkpoints (114.75 / 57.375 on the 0-255 scale),
#: ``torchvision_video`` for torchvision's Kinetics video models (``R3D_18_Weights`` and friends).
MEAN_STD_PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "pytorchvideo": ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
    "torchvision_video": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
}


def resolve_mean_std(preset: str | None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
                     ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of ``preset`` (a key of ``MEAN_STD_PRESETS``; None = "imagenet"), each replaced by ``mean`` /
    ``std`` when given.

    Raises:
        ConfigError: key ``mean_std`` (unknown preset) or ``mean`` / ``std`` (not 3 values, or std <= 0).
    """
    preset = "imagenet" if preset is None else preset
    if preset not in MEAN_STD_PRESETS:
        raise ConfigError("mean_std", f"unknown preset {preset!r}; allowed: {sorted(MEAN_STD_PRESETS)}")
    m, s = MEAN_STD_PRESETS[preset]
    m = tuple(float(v) for v in (mean if mean is not None else m))
    s = tuple(float(v) for v in (std if std is not None else s))
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise ConfigError("mean" if len(m) != 3 else "std", f"need 3 values each for mean and std and std > 0, "
                          f"got mean={m}, std={s}")
    return m, s


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != torch.uint8:
        raise ValueError(f"expected uint8 frames (T, H, W, 3), got {tuple(video.shape)} {video.dtype}")


def _to_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, h, w) (channels-last in memory, as resize returns it) -> uint8 (T, h, w, 3), a view."""
    return frames.permute(0, 2, 3, 1)


def _scaled(height: int, width: int, short_side: float) -> tuple[float, float]:
    f = short_side / min(height, width)
    return height * f, width * f


def _enlarge_boxes(x: torch.Tensor, box_size: torch.Tensor) -> None:
    """In place: scale the (s, s) top-left box of every clip of x (N, 3, T, H, W) with ``box_size`` s < W to (H, W)."""
    n, c, t, h, w = x.shape
    small = box_size < w
    if not bool(small.any()):
        return
    for side in torch.unique(box_size[small]).tolist():
        rows = torch.nonzero(box_size == side).flatten()
        box = x[rows, :, :, :side, :side].reshape(len(rows), c * t, side, side)
        scaled = F_nn.interpolate(box, size=(h, w), mode="bilinear", align_corners=False)
        x[rows] = scaled.view(len(rows), c, t, h, w)


class BatchTransform(nn.Module):
    """Device-side batch transform: optional horizontal flip per clip, float conversion, mean/std normalisation.

    Args:
        mean, std: per-channel RGB statistics in [0, 1] units (``data.mean`` / ``data.std``).

    Call: ``transform(video uint8 (N, T, H, W, 3), flip bool (N,) or None, box_size int (N,) or None)
    -> float32 (N, 3, T, H, W)``, contiguous, ``(x / 255 - mean) / std`` per channel. A clip with ``box_size[i] < W``
    holds a (box_size, box_size) box in its top-left corner, which is scaled up to (H, W) (bilinear,
    ``align_corners=False``, as torchvision's resize); clips with ``flip[i]`` are then mirrored along W. Float input
    (N, 3, T, H, W) is returned as it is (already normalised). Runs on the device of ``video`` (the buffers follow
    it).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each and std > 0, got mean={mean}, std={std}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        # x_uint8 * scale + shift == (x / 255 - mean) / std, in float32
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std], dtype=torch.float32).view(1, 3, 1, 1, 1)
        shift = torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float32).view(1, 3, 1, 1, 1)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("shift", shift, persistent=False)

    def forward(self, video: torch.Tensor, flip: torch.Tensor | None = None,
                box_size: torch.Tensor | None = None) -> torch.Tensor:
        if video.dtype != torch.uint8:
            return video
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"expected uint8 clips (N, T, H, W, 3), got {tuple(video.shape)}")
        if self.scale.device != video.device:
            self.to(video.device)
        n, t, h, w, _ = video.shape
        x = torch.empty((n, 3, t, h, w), dtype=torch.float32, device=video.device)
        x.copy_(video.permute(0, 4, 1, 2, 3))
        x.mul_(self.scale).add_(self.shift)  # affine per channel: commutes with the bilinear scaling below
        if box_size is not None:
            _enlarge_boxes(x, torch.as_tensor(box_size, device=video.device))
        if flip is not None:
            rows = torch.nonzero(torch.as_tensor(flip, dtype=torch.bool, device=video.device)).flatten()
            if len(rows):
                x[rows] = x[rows].flip(-1)  # only the mirrored clips are copied
        return x

    def views(self, frames: torch.Tensor, view_rows: torch.Tensor, view_boxes: torch.Tensor,
              view_size: Sequence[int]) -> torch.Tensor:
        """The test views of a batch, cut where the model runs: uint8 ``frames`` (R, h, w, 3) (a test batch's, see
        :func:`gnvideo.data.collate.collate_views`), ``view_rows`` int64 (V, T) (the frames of each view),
        ``view_boxes`` int64 (V, 2) (each view's top and left) and ``view_size`` (vh, vw) -> float32 (V, 3, T, vh,
        vw), normalised as :meth:`forward`: the same values as ``forward(cut_views(...))``, without making the uint8
        views first."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (R, h, w, 3), got {tuple(frames.shape)} {frames.dtype}")
        if self.scale.device != frames.device:
            self.to(frames.device)
        (v, t), (vh, vw) = view_rows.shape, (int(view_size[0]), int(view_size[1]))
        x = torch.empty((v, 3, t, vh, vw), dtype=torch.float32, device=frames.device)
        for i, (top, left) in enumerate(view_boxes.tolist()):  # one gather of the view's pixels, converted on copy
            x[i].copy_(frames[:, top:top + vh, left:left + vw][view_rows[i]].permute(3, 0, 1, 2))
        return x.mul_(self.scale).add_(self.shift)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def cut_views(frames: torch.Tensor, view_rows: torch.Tensor, view_boxes: torch.Tensor,
              view_size: Sequence[int], out: torch.Tensor | None = None) -> torch.Tensor:
    """The uint8 test views (V, T, vh, vw, 3) of a test item or batch (arguments as :meth:`BatchTransform.views`),
    written into ``out`` if given: view ``i`` is ``frames[view_rows[i], top:top + vh, left:left + vw]`` with
    ``(top, left) = view_boxes[i]``, one ``index_select`` per view."""
    vh, vw = int(view_size[0]), int(view_size[1])
    if out is None:
        out = torch.empty((*view_rows.shape, vh, vw, 3), dtype=frames.dtype, device=frames.device)
    for i, (top, left) in enumerate(view_boxes.tolist()):
        torch.index_select(frames[:, top:top + vh, left:left + vw], 0, view_rows[i], out=out[i])
    return out


class TrainClip(NamedTuple):
    """A training clip as the worker sends it.

    Attributes:
        video: uint8 (T, crop, crop, 3).
        flip: whether :class:`BatchTransform` mirrors the clip.
        box_size: side (pixels) of the source box in the top-left of ``video`` that :class:`BatchTransform` scales
            up to the crop; ``crop`` when ``video`` already is the finished crop.
    """

    video: torch.Tensor
    flip: bool
    box_size: int


class TrainTransform:
    """Random short-side scale and random square crop on uint8; draws the horizontal flip (applied on the device).

    Args:
        short_side_range: (min, max) short side in pixels, drawn uniformly (integers, inclusive).
        crop_size: side of the square crop in pixels (<= short_side_range[0]).
        flip_prob: probability of a horizontal flip.
        upscale_on_device: when the crop box is smaller than the crop (the scale enlarges), send the box unscaled
            and let :class:`BatchTransform` enlarge it on the device (see the module docstring); False scales it
            here (uint8, as torchvision's ``resized_crop``).

    Call: ``transform(frames uint8 (T, H, W, 3), generator=None) -> TrainClip(video, flip, box_size)``; the clip is
    not flipped, ``flip`` says whether :class:`BatchTransform` mirrors it.
    """

    def __init__(
        self,
        short_side_range: tuple[int, int] = (256, 320),
        crop_size: int = 224,
        flip_prob: float = 0.5,
        upscale_on_device: bool = False,
    ) -> None:
        lo, hi = (int(v) for v in short_side_range)
        if not 0 < lo <= hi:
            raise ConfigError("short_side_range", f"must be (min, max) with 0 < min <= max, got {short_side_range}")
        if not 0 < crop_size <= lo:
            raise ConfigError("crop_size", f"crop_size ({crop_size}) must be positive and <= short_side_range[0] "
                              f"({lo})")
        if not 0.0 <= flip_prob <= 1.0:
            raise ConfigError("flip_prob", f"must be in [0, 1], got {flip_prob}")
        self.short_side_range, self.crop_size, self.flip_prob = (lo, hi), int(crop_size), float(flip_prob)
        self.upscale_on_device = bool(upscale_on_device)

    def __call__(self, video: torch.Tensor, generator: torch.Generator | None = None) -> TrainClip:
        _check_video(video)
        t, h, w, _ = video.shape
        lo, hi = self.short_side_range
        short = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        sh, sw = _scaled(h, w, short)
        f = min(h, w) / short  # original pixels per scaled pixel
        top = float(torch.rand((), generator=generator)) * (sh - self.crop_size)
        left = float(torch.rand((), generator=generator)) * (sw - self.crop_size)
        flip = float(torch.rand((), generator=generator)) < self.flip_prob
        crop = self.crop_size
        box = max(1, round(crop * f))
        top0 = min(round(top * f), h - box)
        left0 = min(round(left * f), w - box)
        if box == crop or (box < crop and self.upscale_on_device):
            # each byte written once: the box, then zeros around it (torch.zeros first cost 4x as much here)
            out = torch.empty((t, crop, crop, 3), dtype=torch.uint8)
            out[:, :box, :box] = video[:, top0:top0 + box, left0:left0 + box]
            out[:, box:] = 0
            out[:, :box, box:] = 0
            return TrainClip(out, flip, box)
        frames = video.permute(0, 3, 1, 2)
        out = F.resized_crop(frames, top0, left0, box, box, [crop, crop], antialias=True)
        return TrainClip(_to_clip(out), flip, crop)

    def __repr__(self) -> str:
        return (f"TrainTransform(short_side_range={self.short_side_range}, crop_size={self.crop_size}, "
                f"flip_prob={self.flip_prob}, upscale_on_device={self.upscale_on_device})")


class EvalTransform:
    """Scale the short side to ``short_side`` and take 1 centre crop or 3 crops along the long side, or the full frame.

    Args:
        short_side: short side in pixels after scaling.
        crop_size: square crop side in pixels (<= short_side); unused with ``full_frame``.
        num_crops: 1 (centre) or 3 (start, centre, end of the long side: left/centre/right for landscape video).
        full_frame: no crop: the whole scaled frame (short side ``short_side``, the long side in proportion), the
            Non-local paper's fully convolutional test view; needs ``num_crops=1``.
        views_on_device: a test item holds its video's frames once and where its views lie in them, and the model's
            device cuts the views (:meth:`BatchTransform.views`); else the worker writes every view (see
            :mod:`gnvideo.data.collate`). The DataModule turns it on when testing on an accelerator.

    Call: ``transform(frames uint8 (T, H, W, 3), crop_index=None)`` -> a list of ``num_crops`` uint8 clips
    (T, crop, crop, 3), or the single clip for ``crop_index`` in [0, num_crops). :meth:`crops` does the same for any
    stack of frames (e.g. the union of several clips' frames), as (N, 3, crop, crop) channels-last tensors.
    """

    def __init__(
        self,
        short_side: int = 256,
        crop_size: int = 224,
        num_crops: int = 1,
        full_frame: bool = False,
        views_on_device: bool = False,
    ) -> None:
        if num_crops not in (1, 3):
            raise ConfigError("num_crops", f"must be 1 or 3, got {num_crops}")
        if full_frame and num_crops != 1:
            raise ConfigError("num_crops", f"the full-frame test view is one view per clip: num_crops must be 1, "
                              f"got {num_crops}")
        self.full_frame, self.views_on_device = bool(full_frame), bool(views_on_device)
        if not 0 < crop_size <= short_side:
            raise ConfigError("crop_size", f"crop_size ({crop_size}) must be positive and <= short_side ({short_side})")
        self.short_side, self.crop_size, self.num_crops = int(short_side), int(crop_size), int(num_crops)

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(top, left, side) of each crop in original pixel coordinates."""
        sh, sw = _scaled(height, width, self.short_side)
        f = min(height, width) / self.short_side
        box = max(1, round(self.crop_size * f))
        cy, cx = (sh - self.crop_size) / 2, (sw - self.crop_size) / 2
        if self.num_crops == 1:
            spots = [(cy, cx)]
        elif sw >= sh:
            spots = [(cy, 0.0), (cy, cx), (cy, sw - self.crop_size)]
        else:
            spots = [(0.0, cx), (cy, cx), (sh - self.crop_size, cx)]
        return [(min(round(y * f), height - box), min(round(x * f), width - box), box) for y, x in spots]

    def crops(self, video: torch.Tensor, crop_index: int | None = None) -> list[torch.Tensor]:
        """uint8 frames (N, H, W, 3) -> the ``num_crops`` views (or the one of ``crop_index``), uint8 (N, 3, h, w)."""
        _check_video(video)
        if crop_index is not None and not 0 <= crop_index < self.num_crops:
            raise ValueError(f"crop_index must be in [0, {self.num_crops}), got {crop_index}")
        frames = video.permute(0, 3, 1, 2)
        if self.full_frame:
            sh, sw = _scaled(video.shape[1], video.shape[2], self.short_side)
            return [F.resize(frames, [round(sh), round(sw)], antialias=True)]
        boxes = self.boxes(video.shape[1], video.shape[2])
        size = [self.crop_size, self.crop_size]
        picked = boxes if crop_index is None else [boxes[crop_index]]
        return [F.resized_crop(frames, y, x, s, s, size, antialias=True) for y, x, s in picked]

    def view_frames(self, video: torch.Tensor
                    ) -> tuple[list[torch.Tensor], list[tuple[int, int, int]], tuple[int, int]]:
        """What a video's views are cut from, each pixel once: uint8 frames (N, H, W, 3) -> ``(parts, spots, size)``.

        ``parts``: uint8 (N, h, w, 3) tensors; crop ``k`` of frame ``i`` is ``parts[p][i, top:top + vh, left:left +
        vw]`` with ``(p, top, left) = spots[k]`` and ``(vh, vw) = size``: the same pixels as :meth:`crops`. With 3
        crops of frames already at the short side (prepared videos), the one part is ``video`` itself and the crops
        are offsets along the long side (1.0x the frames instead of 3 crops); otherwise the parts are the
        :meth:`crops`, which is how they are computed anyway.
        """
        _check_video(video)
        height, width = video.shape[1:3]
        sh, sw = _scaled(height, width, self.short_side)
        if self.num_crops == 3 and (round(sh), round(sw)) == (height, width):
            return [video], [(0, y, x) for y, x, _ in self.boxes(height, width)], (self.crop_size, self.crop_size)
        parts = [_to_clip(c) for c in self.crops(video)]
        return parts, [(k, 0, 0) for k in range(len(parts))], (parts[0].shape[1], parts[0].shape[2])

    def __call__(self, video: torch.Tensor, crop_index: int | None = None) -> torch.Tensor | list[torch.Tensor]:
        clips = [_to_clip(c) for c in self.crops(video, crop_index)]
        return clips if crop_index is None else clips[0]

    def __repr__(self) -> str:
        view = "full_frame=True" if self.full_frame else f"crop_size={self.crop_size}, num_crops={self.num_crops}"
        return f"EvalTransform(short_side={self.short_side}, {view}, views_on_device={self.views_on_device})"


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "MEAN_STD_PRESETS", "BatchTransform", "EvalTransform", "TrainClip",
           "TrainTransform", "cut_views", "resolve_mean_std"]
