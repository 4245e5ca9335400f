"""Batches of test views: the test items of :class:`gnvideo.data.kinetics.ClipDataset` hold all views of one video,
and :func:`collate_views` flattens them into one batch of views; :func:`batch_tensor` makes the buffers in shared
memory inside a DataLoader worker, so that the batch reaches the main process without a copy."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.utils.data import get_worker_info


def batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized tensor, in shared memory when made in a DataLoader worker (as torch's default collate makes
    its batches), so that handing it to the main process copies nothing."""
    if get_worker_info() is None:
        return torch.empty(tuple(shape), dtype=dtype)
    like = torch.empty(0, dtype=dtype)
    return like.new(like._typed_storage()._new_shared(math.prod(shape))).view(tuple(shape))


def collate_views(items: Sequence[dict]) -> dict:
    """Collate test items (each one video with V views) into a batch of views.

    ``video`` uint8 (V_i, T, h, w, 3) per item -> (sum V_i, T, h, w, 3); ``view_index`` (V_i,) -> (sum V_i,);
    ``label`` / ``video_index`` (int64), ``valid`` / ``flip`` (bool) repeated once per view of their video.
    """
    counts = torch.tensor([int(it["video"].shape[0]) for it in items])
    videos = [it["video"] for it in items]
    if len(videos) == 1 and (videos[0].is_shared() or get_worker_info() is None):
        video = videos[0]  # one video per batch (the usual case: 30 views fill a batch): no copy
    else:
        video = torch.cat(videos, out=batch_tensor((int(counts.sum()), *videos[0].shape[1:]), videos[0].dtype))
    out = {"video": video,
           "view_index": torch.cat([torch.as_tensor(it["view_index"], dtype=torch.int64) for it in items])}
    for key, dtype in (("label", torch.int64), ("video_index", torch.int64), ("valid", torch.bool),
                       ("flip", torch.bool)):
        out[key] = torch.repeat_interleave(torch.tensor([it[key] for it in items], dtype=dtype), counts)
    return out


__all__ = ["batch_tensor", "collate_views"]
