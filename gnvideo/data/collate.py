"""Test items and batches of views, in one of two forms (:class:`gnvideo.data.transforms.EvalTransform`'s
``views_on_device``):

- **views cut on the device** (the DataModule's choice on an accelerator): an item holds its video's frames once and
  where its views lie in them; the model's device cuts the views (:meth:`~gnvideo.data.transforms.BatchTransform.views`,
  in ``VideoClassifier.on_after_batch_transfer``). A video's 10 clips x 3 crops overlap, so the frames are about a
  third of the bytes of the views, and the worker copies each frame once instead of writing every view.
  Keys: ``frames`` uint8 (R, h, w, 3), ``view_rows`` int64 (V, T) (rows of ``frames``, per view), ``view_boxes``
  int64 (V, 2) (top, left of each view), ``view_size`` (vh, vw) ints.
- **views cut in the worker** (on a CPU trainer, where the device is the training process itself): ``video`` uint8
  (V, T, vh, vw, 3).

Both carry ``view_index`` int64 (V,) (view = clip x num_crops + crop) and, per view in a batch (per video in an
item), ``label`` / ``video_index`` int64 and ``valid`` / ``flip`` bool. :func:`collate_views` batches either form,
:func:`views_of` gives the uint8 views of either. :func:`batch_tensor` makes buffers in shared memory inside a
DataLoader worker, so that a batch reaches the main process without a copy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import get_worker_info

from .transforms import EvalTransform, cut_views

#: the keys of a test item or batch whose views the device cuts
VIEW_KEYS = ("frames", "view_rows", "view_boxes", "view_size")


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor, in shared memory when made in a DataLoader worker (as torch's default collate makes
    its batches), so that handing it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    return like.new(like._typed_storage()._new_shared(math.prod(shape))).view(tuple(shape))


def make_views_item(transform: EvalTransform, frames: torch.Tensor, union: Sequence[int],
                    clips: Sequence[Sequence[int]]) -> dict:
    """The views of ``clips`` (frame indices, num_clips x T) x ``transform``'s crops, from the decoded frames of
    ``union`` (their sorted union, uint8 (U, H, W, 3); may be the decoder's own buffer: what is returned is a copy),
    in ``transform``'s form (module docstring); every output byte is written once."""
    parts, spots, size = transform.view_frames(frames)
    where = {frame: k for k, frame in enumerate(union)}
    rows = torch.tensor([[where[i] for i in clip] for clip in clips], dtype=torch.int64)
    boxes = torch.tensor([[top, left] for _ in clips for _, top, left in spots], dtype=torch.int64)
    vh, vw = int(size[0]), int(size[1])
    if not transform.views_on_device:
        out = batch_tensor((len(clips) * len(spots), len(clips[0]), vh, vw, 3), frames.dtype)
        for c in range(len(clips)):  # view = clip x num_crops + crop
            for k, (p, top, left) in enumerate(spots):
                torch.index_select(parts[p][:, top:top + vh, left:left + vw], 0, rows[c], out=out[c * len(spots) + k])
        return {"video": out}
    n = len(union)
    out = batch_tensor((n * len(parts), *parts[0].shape[1:]), frames.dtype)
    for p, part in enumerate(parts):
        out[p * n:(p + 1) * n].copy_(part)
    view_rows = torch.stack([rows[c] + p * n for c in range(len(clips)) for p, _, _ in spots])
    return {"frames": out, "view_rows": view_rows, "view_boxes": boxes, "view_size": (vh, vw)}


def blank_views_item(transform: EvalTransform, num_views: int, num_frames: int) -> dict:
    """The item of a video that could not be read, in ``transform``'s form: zero views of crop size."""
    size = transform.crop_size
    if not transform.views_on_device:
        return {"video": torch.zeros(num_views, num_frames, size, size, 3, dtype=torch.uint8)}
    return {"frames": torch.zeros(num_frames, size, size, 3, dtype=torch.uint8),
            "view_rows": torch.arange(num_frames).repeat(num_views, 1),
            "view_boxes": torch.zeros(num_views, 2, dtype=torch.int64), "view_size": (size, size)}


def _stack_frames(items: Sequence[dict]) -> dict:
    """The device-cut form of a batch: frames stacked (R_i rows each, ``view_rows`` moved along; frames of different
    sizes share the largest size, the pixels outside a video's own never read)."""
    sizes = {tuple(it["view_size"]) for it in items}
    if len(sizes) != 1:
        raise ValueError(f"test views of different sizes {sorted(sizes)} in one batch: full-frame views need one "
                         f"video per batch")
    frames = [it["frames"] for it in items]
    if len(frames) == 1 and (frames[0].is_shared() or get_worker_info() is None):
        stacked, starts = frames[0], [0]  # one video per batch (the usual case: 30 views fill a batch): no copy
    else:
        height, width = max(f.shape[1] for f in frames), max(f.shape[2] for f in frames)
        starts = [0, *torch.cumsum(torch.tensor([f.shape[0] for f in frames]), 0).tolist()[:-1]]
        stacked = batch_tensor((sum(f.shape[0] for f in frames), height, width, 3), frames[0].dtype)
        for start, f in zip(starts, frames):
            stacked[start:start + f.shape[0], :f.shape[1], :f.shape[2]] = f
    return {"frames": stacked, "view_rows": torch.cat([it["view_rows"] + s for it, s in zip(items, starts)]),
            "view_boxes": torch.cat([it["view_boxes"] for it in items]), "view_size": sizes.pop()}


def _stack_views(items: Sequence[dict]) -> dict:
    videos = [it["video"] for it in items]
    if len(videos) == 1 and (videos[0].is_shared() or get_worker_info() is None):
        return {"video": videos[0]}  # one video per batch: no copy
    total = sum(int(v.shape[0]) for v in videos)
    return {"video": torch.cat(videos, out=batch_tensor((total, *videos[0].shape[1:]), videos[0].dtype))}


def collate_views(items: Sequence[dict]) -> dict:
    """Collate test items (each one video with V_i views, in either form) into one batch of sum V_i views:
    ``video`` / ``frames`` as the form says, ``view_index`` concatenated, ``label`` / ``video_index`` (int64),
    ``valid`` / ``flip`` (bool) repeated once per view of their video."""
    on_device = {"frames" in it for it in items}
    if len(on_device) != 1:
        raise ValueError("test items of both forms (views cut on the device and in the worker) in one batch")
    counts = torch.tensor([int(len(it["view_index"])) for it in items])
    out = _stack_frames(items) if on_device.pop() else _stack_views(items)
    out["view_index"] = torch.cat([torch.as_tensor(it["view_index"], dtype=torch.int64) for it in items])
    for key, dtype in (("label", torch.int64), ("video_index", torch.int64), ("valid", torch.bool),
                       ("flip", torch.bool)):
        out[key] = torch.repeat_interleave(torch.tensor([it[key] for it in items], dtype=dtype), counts)
    return out


def views_of(batch: dict) -> torch.Tensor:
    """The uint8 views (V, T, vh, vw, 3) of a test item or batch of either form (cut where its frames are)."""
    if "video" in batch:
        return batch["video"]
    return cut_views(*(batch[k] for k in VIEW_KEYS))


__all__ = ["VIEW_KEYS", "batch_tensor", "blank_views_item", "collate_views", "make_views_item", "views_of"]
