"""Video-level evaluation: average the softmax of every view of a video, then score the video.

A test set yields ``num_clips x num_crops`` views per video (one item each). The views of one video may be split across
batches and across DDP ranks, so :class:`MultiViewAggregator` keeps, per ``video_index``, the sum of the view softmax
vectors, the number of valid views, the number of invalid views and the label. :meth:`MultiViewAggregator.reduce`
sums these over ranks (the evaluation sampler is not padded, so every view is counted exactly once), and
:func:`video_metrics` scores every video that has at least one view and no invalid view. Videos with an invalid view
are never scored; they are counted as ``videos_skipped``.

All accuracies are in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["MultiViewAggregator", "VideoScores", "aggregate_views", "video_metrics"]


@dataclass
class VideoScores:
    """Per-video state after aggregation (one row per ``video_index`` from 0 to the largest seen).

    Attributes:
        prob_sums: float64 (V, K) sum of the softmax over the valid views of each video.
        view_counts: int64 (V,) number of valid views.
        invalid_counts: int64 (V,) number of invalid views (broken video or failed decode).
        labels: int64 (V,) label of each video (-1 when unknown or unseen).
    """

    prob_sums: Tensor
    view_counts: Tensor
    invalid_counts: Tensor
    labels: Tensor

    @property
    def seen(self) -> Tensor:
        """bool (V,): the video had at least one view (valid or not)."""
        return (self.view_counts + self.invalid_counts) > 0

    @property
    def scored(self) -> Tensor:
        """bool (V,): the video has valid views and no invalid view, so it is scored."""
        return (self.view_counts > 0) & (self.invalid_counts == 0)

    @property
    def skipped(self) -> Tensor:
        """bool (V,): the video was seen but has an invalid view, so it is not scored."""
        return self.seen & (self.invalid_counts > 0)

    def mean_probs(self) -> tuple[Tensor, Tensor]:
        """Average softmax of every scored video.

        Returns:
            ``(video_indices, probs)``: int64 (S,) and float64 (S, K), S = number of scored videos.
        """
        idx = torch.nonzero(self.scored, as_tuple=False).flatten()
        probs = self.prob_sums[idx] / self.view_counts[idx].unsqueeze(1).to(self.prob_sums.dtype)
        return idx, probs


class MultiViewAggregator:
    """Accumulates view softmax sums per video; exact across DDP ranks.

    Args:
        num_classes: K, the width of the probability vectors.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget everything (call at the start of each evaluation epoch)."""
        k = self.num_classes
        self._sums = torch.zeros(0, k, dtype=torch.float64)
        self._counts = torch.zeros(0, dtype=torch.int64)
        self._invalid = torch.zeros(0, dtype=torch.int64)
        self._labels = torch.full((0,), -1, dtype=torch.int64)

    def __len__(self) -> int:
        return self._counts.numel()

    def _grow(self, size: int) -> None:
        old = len(self)
        if size <= old:
            return
        size = max(size, 2 * old)
        k = self.num_classes
        self._sums = torch.cat([self._sums, torch.zeros(size - old, k, dtype=torch.float64)])
        self._counts = torch.cat([self._counts, torch.zeros(size - old, dtype=torch.int64)])
        self._invalid = torch.cat([self._invalid, torch.zeros(size - old, dtype=torch.int64)])
        self._labels = torch.cat([self._labels, torch.full((size - old,), -1, dtype=torch.int64)])

    def update(self, probs: Tensor, video_index: Tensor, labels: Tensor | None = None) -> None:
        """Add the softmax of valid views.

        Args:
            probs: (B, K) probabilities of B valid views (any float dtype, any device).
            video_index: (B,) integer index of the video each view belongs to.
            labels: (B,) integer labels (-1 for unknown), or None.
        """
        if probs.ndim != 2 or probs.shape[1] != self.num_classes:
            raise ValueError(f"probs must have shape (B, {self.num_classes}), got {tuple(probs.shape)}")
        vi = video_index.detach().to("cpu", torch.int64).flatten()
        if vi.numel() != probs.shape[0]:
            raise ValueError(f"video_index has {vi.numel()} entries for {probs.shape[0]} views")
        if vi.numel() == 0:
            return
        if int(vi.min()) < 0:
            raise ValueError(f"video_index must be >= 0, got {int(vi.min())}")
        self._grow(int(vi.max()) + 1)
        self._sums.index_add_(0, vi, probs.detach().to("cpu", torch.float64))
        self._counts.index_add_(0, vi, torch.ones_like(vi))
        if labels is not None:
            self._labels[vi] = labels.detach().to("cpu", torch.int64).flatten()

    def update_invalid(self, video_index: Tensor) -> None:
        """Record invalid views; their videos will be skipped.

        Args:
            video_index: (B,) integer index of the video of each invalid view.
        """
        vi = video_index.detach().to("cpu", torch.int64).flatten()
        if vi.numel() == 0:
            return
        self._grow(int(vi.max()) + 1)
        self._invalid.index_add_(0, vi, torch.ones_like(vi))

    def local_scores(self) -> VideoScores:
        """This process's state, without communication."""
        return VideoScores(self._sums.clone(), self._counts.clone(), self._invalid.clone(), self._labels.clone())

    def reduce(self, device: torch.device | str | None = None) -> VideoScores:
        """Sum the state over all ranks (no-op without an initialized process group).

        Every rank must call this (it is a collective). Rows are padded to the largest ``video_index`` seen by any
        rank, then sums and counts are all-reduced with SUM and labels with MAX (unseen rows hold -1).

        Args:
            device: where the collectives run (a CUDA device for NCCL); defaults to CPU.
        """
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.local_scores()
        device = torch.device(device) if device is not None else torch.device("cpu")
        size = torch.tensor([len(self)], dtype=torch.int64, device=device)
        dist.all_reduce(size, op=dist.ReduceOp.MAX)
        n = int(size.item())
        k = self.num_classes
        sums = torch.zeros(n, k, dtype=torch.float64, device=device)
        counts = torch.zeros(n, dtype=torch.int64, device=device)
        invalid = torch.zeros(n, dtype=torch.int64, device=device)
        labels = torch.full((n,), -1, dtype=torch.int64, device=device)
        m = len(self)
        sums[:m] = self._sums.to(device)
        counts[:m] = self._counts.to(device)
        invalid[:m] = self._invalid.to(device)
        labels[:m] = self._labels.to(device)
        for t in (sums, counts, invalid):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        dist.all_reduce(labels, op=dist.ReduceOp.MAX)
        return VideoScores(sums.cpu(), counts.cpu(), invalid.cpu(), labels.cpu())


def video_metrics(scores: VideoScores, num_classes: int | None = None) -> dict[str, float | int]:
    """Top-1, top-5 and mean class accuracy over scored videos.

    Args:
        scores: aggregated per-video state.
        num_classes: K (defaults to the width of ``scores.prob_sums``); top-5 uses ``min(5, K)``.

    Returns:
        ``{"top1", "top5", "mean_class_accuracy"}`` in percent (NaN when no video is scored), ``"videos_scored"``
        and ``"videos_skipped"`` (ints). Mean class accuracy averages per-class top-1 over classes that have at least
        one scored video.
    """
    k = num_classes if num_classes is not None else scores.prob_sums.shape[1]
    idx, probs = scores.mean_probs()
    labels = scores.labels[idx]
    if (labels < 0).any():
        raise ValueError("scored videos without a label (label -1); cannot compute accuracy")
    out: dict[str, float | int] = {
        "videos_scored": int(idx.numel()),
        "videos_skipped": int(scores.skipped.sum()),
    }
    if idx.numel() == 0:
        out.update(top1=math.nan, top5=math.nan, mean_class_accuracy=math.nan)
        return out
    topk = probs.topk(min(5, k), dim=1).indices
    correct1 = topk[:, 0] == labels
    correct5 = (topk == labels.unsqueeze(1)).any(dim=1)
    per_class = []
    for c in labels.unique():
        mask = labels == c
        per_class.append(correct1[mask].double().mean())
    out.update(
        top1=100.0 * correct1.double().mean().item(),
        top5=100.0 * correct5.double().mean().item(),
        mean_class_accuracy=100.0 * torch.stack(per_class).mean().item(),
    )
    return {key: out[key] for key in ("top1", "top5", "mean_class_accuracy", "videos_scored", "videos_skipped")}


def aggregate_views(
    logits: Tensor, video_index: Tensor, labels: Tensor, valid: Tensor | None = None
) -> dict[str, float | int]:
    """One-shot multi-view scoring of flat per-view logits (single process).

    Args:
        logits: (N, K) per-view logits.
        video_index: (N,) video of each view.
        labels: (N,) label of each view's video.
        valid: (N,) bool; False marks a broken view (its video is skipped). Defaults to all valid.

    Returns:
        The dict of :func:`video_metrics`.
    """
    valid = torch.ones(logits.shape[0], dtype=torch.bool) if valid is None else valid.to(torch.bool)
    agg = MultiViewAggregator(logits.shape[1])
    agg.update(logits[valid].float().softmax(dim=1), video_index[valid], labels[valid])
    agg.update_invalid(video_index[~valid])
    return video_metrics(agg.local_scores())
