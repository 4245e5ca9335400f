"""Multi-view aggregation: fabricated logits scored by hand, invalid views, and a 2-process gloo all-reduce."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gnvideo.evaluation import MultiViewAggregator, aggregate_views, video_metrics

K = 6


def _logits(*probs: list[float]) -> torch.Tensor:
    """Logits whose softmax is exactly ``probs`` (each row padded with tiny mass to K classes)."""
    rows = []
    for p in probs:
        p = torch.tensor(p + [0.0] * (K - len(p)), dtype=torch.float64) + 1e-9
        rows.append((p / p.sum()).log())
    return torch.stack(rows).float()


def _case():
    """Five videos, three views each; video 4 has one broken view.

    video 0, label 1: views favour class 0 twice, but the averaged softmax favours class 1 -> top-1 correct.
    video 1, label 2: averaged [0.5, 0.3, 0.2] -> top-1 wrong (class 0), label is 3rd -> top-5 correct.
    video 2, label 5: all mass on classes 0..4 in order -> top-1 wrong, label 6th -> top-5 wrong.
    video 3, label 1: correct.
    video 4, label 0: would be correct but has an invalid view -> skipped, never scored.
    """
    views = [
        (0, 1, [0.6, 0.4]), (0, 1, [0.6, 0.4]), (0, 1, [0.0, 1.0]),
        (1, 2, [0.5, 0.3, 0.2]), (1, 2, [0.5, 0.3, 0.2]), (1, 2, [0.5, 0.3, 0.2]),
        (2, 5, [0.3, 0.25, 0.2, 0.15, 0.1]), (2, 5, [0.3, 0.25, 0.2, 0.15, 0.1]), (2, 5, [0.3, 0.25, 0.2, 0.15, 0.1]),
        (3, 1, [0.1, 0.9]), (3, 1, [0.2, 0.8]), (3, 1, [0.3, 0.7]),
        (4, 0, [1.0]), (4, 0, [1.0]), (4, 0, [1.0]),
    ]
    vi = torch.tensor([v[0] for v in views])
    labels = torch.tensor([v[1] for v in views])
    logits = _logits(*[v[2] for v in views])
    valid = torch.ones(len(views), dtype=torch.bool)
    valid[13] = False
    return logits, vi, labels, valid


# Hand computation: scored videos 0..3; top-1 correct: 0, 3 -> 50%; top-5 correct: 0, 1, 3 -> 75%.
# Per-class top-1 over classes with scored videos: class 1 (videos 0, 3): 1.0; class 2 (video 1): 0; class 5: 0
# -> mean class accuracy = 1/3.
EXPECTED = {"top1": 50.0, "top5": 75.0, "mean_class_accuracy": 100.0 / 3, "videos_scored": 4, "videos_skipped": 1}


def _check(metrics: dict) -> None:
    assert metrics["videos_scored"] == EXPECTED["videos_scored"]
    assert metrics["videos_skipped"] == EXPECTED["videos_skipped"]
    for k in ("top1", "top5", "mean_class_accuracy"):
        assert metrics[k] == pytest.approx(EXPECTED[k], abs=1e-6), k


def test_hand_computed_case():
    logits, vi, labels, valid = _case()
    _check(aggregate_views(logits, vi, labels, valid))


def test_batches_in_any_order_and_split_give_same_result():
    logits, vi, labels, valid = _case()
    perm = torch.randperm(len(vi), generator=torch.Generator().manual_seed(0))
    agg = MultiViewAggregator(K)
    for chunk in perm.split(4):
        v = valid[chunk]
        agg.update(logits[chunk][v].softmax(1), vi[chunk][v], labels[chunk][v])
        agg.update_invalid(vi[chunk][~v])
    scores = agg.local_scores()
    assert scores.view_counts.tolist() == [3, 3, 3, 3, 2]
    assert scores.invalid_counts.tolist() == [0, 0, 0, 0, 1]
    _check(video_metrics(scores))


def test_all_views_valid_scores_every_video_and_averages_softmax_not_votes():
    logits, vi, labels, _ = _case()
    m = aggregate_views(logits, vi, labels)
    assert m["videos_scored"] == 5 and m["videos_skipped"] == 0
    assert m["top1"] == pytest.approx(60.0)  # video 4 now scored and correct: 3 of 5
    only0 = vi == 0
    assert aggregate_views(logits[only0], vi[only0], labels[only0])["top1"] == 100.0  # majority vote would say 0


def test_nothing_scored_gives_nan_and_bad_shapes_raise():
    agg = MultiViewAggregator(K)
    agg.update_invalid(torch.tensor([0, 0, 1]))
    m = video_metrics(agg.local_scores())
    assert m["videos_scored"] == 0 and m["videos_skipped"] == 2 and math.isnan(m["top1"])
    with pytest.raises(ValueError, match="shape"):
        agg.update(torch.zeros(2, K + 1), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="video_index"):
        agg.update(torch.zeros(2, K), torch.tensor([0, 1, 2]))


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    logits, vi, labels, valid = _case()
    shard = torch.arange(rank, len(vi), world)  # interleaved: every video has views on both ranks
    agg = MultiViewAggregator(K)
    v = valid[shard]
    agg.update(logits[shard][v].softmax(1), vi[shard][v], labels[shard][v])
    agg.update_invalid(vi[shard][~v])
    metrics = video_metrics(agg.reduce())
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(metrics, f)
    dist.destroy_process_group()


def test_reduce_across_two_gloo_ranks(tmp_path):
    # video 4's broken view (index 13) is on rank 1, its valid views (12, 14) on rank 0: only the reduce can skip it
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0 == r1
    _check(r0)
