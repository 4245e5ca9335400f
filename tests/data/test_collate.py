"""Test items hold a video's frames once; the batch's views are cut where the model runs (gnvideo.data.collate)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import DataLoader

from gnvideo.data import collate_views, eval_clip_indices, views_of
from gnvideo.data.collate import VIEW_KEYS, blank_views_item, make_views_item
from gnvideo.data.transforms import BatchTransform, EvalTransform, cut_views


def _frames(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, height, width, 3), dtype=torch.uint8, generator=generator)


def _reference(transform: EvalTransform, video: torch.Tensor, clips) -> torch.Tensor:
    """Each view on its own: the clip's frames, then its crop (V, T, h, w, 3)."""
    return torch.stack([view for clip in clips for view in transform(video[torch.tensor(clip)])])


def _item(transform: EvalTransform, video: torch.Tensor, num_frames: int, num_clips: int, **extra) -> dict:
    """A test item with the views cut on the device (checked against the worker's form of the same views)."""
    clips = eval_clip_indices(video.shape[0], num_frames, 2, num_clips)
    union = sorted({i for clip in clips for i in clip})
    transform = copy.copy(transform)
    transform.views_on_device = False
    in_worker = make_views_item(transform, video[torch.tensor(union)], union, clips)
    transform.views_on_device = True
    item = make_views_item(transform, video[torch.tensor(union)], union, clips)
    assert set(in_worker) == {"video"} and set(item) == set(VIEW_KEYS)
    assert torch.equal(views_of(item), in_worker["video"])
    views = len(clips) * transform.num_crops
    return {**item, "view_index": torch.arange(views), "label": 1, "video_index": 0, "valid": True, "flip": False,
            **extra}, clips


@pytest.mark.parametrize("height,width,short_side,num_crops", [
    (48, 64, 48, 3),  # prepared frames: the union itself, crops as offsets
    (64, 48, 48, 3),  # portrait: offsets along the height
    (96, 128, 48, 3),  # scaled: the 3 crops stacked
    (48, 64, 48, 1),
    (60, 80, 48, 1),
])
def test_views_of_an_item_equal_each_view_made_alone(height, width, short_side, num_crops):
    video = _frames(40, height, width)
    transform = EvalTransform(short_side, 40, num_crops=num_crops)
    item, clips = _item(transform, video, 8, 5)
    want = _reference(transform, video, clips)
    got = cut_views(item["frames"], item["view_rows"], item["view_boxes"], item["view_size"])
    assert got.shape == want.shape == (5 * num_crops, 8, 40, 40, 3)
    assert torch.equal(got, want)
    normed = BatchTransform().views(item["frames"], item["view_rows"], item["view_boxes"], item["view_size"])
    assert torch.equal(normed, BatchTransform()(want))
    if num_crops == 3 and min(height, width) == short_side:  # each frame of the union once, not three crops of it
        assert item["frames"].shape == (len({i for c in clips for i in c}), height, width, 3)


def test_full_frame_views_and_their_batches():
    transform = EvalTransform(48, 40, full_frame=True)
    wide, _ = _item(transform, _frames(30, 48, 64), 8, 3)
    assert wide["view_size"] == (48, 64)
    views = cut_views(wide["frames"], wide["view_rows"], wide["view_boxes"], wide["view_size"])
    assert views.shape == (3, 8, 48, 64, 3)
    tall, _ = _item(transform, _frames(30, 64, 48), 8, 3)
    with pytest.raises(ValueError, match="one video per batch"):
        collate_views([wide, tall])


def test_a_batch_of_videos_of_different_sizes_keeps_every_view():
    transform = EvalTransform(48, 40, num_crops=3)
    videos = [_frames(40, 48, 64, 1), _frames(24, 48, 86, 2), _frames(50, 96, 128, 3)]  # union, union, stacked crops
    items, want = [], []
    for v, video in enumerate(videos):
        item, clips = _item(transform, video, 8, 4, video_index=v, label=v)
        items.append(item)
        want.append(_reference(transform, video, clips))
    blank = {**blank_views_item(EvalTransform(48, 40, views_on_device=True), 12, 8), "view_index": torch.arange(12),
             "label": 0, "video_index": 3,
             "valid": False, "flip": False}
    batch = collate_views([*items, blank])
    got = cut_views(batch["frames"], batch["view_rows"], batch["view_boxes"], batch["view_size"])
    assert torch.equal(got[:36], torch.cat(want)) and not got[36:].any()
    assert batch["video_index"].tolist() == [v for v in range(4) for _ in range(12)]
    assert batch["valid"].tolist() == [True] * 36 + [False] * 12
    assert batch["view_index"].tolist() == list(range(12)) * 4


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_a_worker_sends_far_fewer_bytes_than_the_views():
    transform = EvalTransform(48, 40, num_crops=3)
    item, clips = _item(transform, _frames(60, 48, 64), 16, 10)
    loader = DataLoader(_Items([item]), batch_size=1, num_workers=1, collate_fn=collate_views)
    batch = next(iter(loader))
    assert torch.equal(batch["frames"], item["frames"])
    views_bytes = 30 * 16 * 40 * 40 * 3
    assert batch["frames"].numel() < 0.5 * views_bytes  # 10 overlapping clips of 60 frames: the union is 60 frames


def test_items_of_the_two_forms_do_not_mix_and_a_blank_item_has_its_transforms_form():
    on_device, in_worker = EvalTransform(48, 40, views_on_device=True), EvalTransform(48, 40)
    assert set(blank_views_item(in_worker, 3, 4)) == {"video"}
    assert set(blank_views_item(on_device, 3, 4)) == set(VIEW_KEYS)
    extra = {"view_index": torch.arange(3), "label": 0, "video_index": 0, "valid": False, "flip": False}
    with pytest.raises(ValueError, match="both forms"):
        collate_views([{**blank_views_item(in_worker, 3, 4), **extra}, {**blank_views_item(on_device, 3, 4), **extra}])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_views_cut_on_a_gpu_equal_the_cpu():
    """The device-side cut of a test batch (what on_after_batch_transfer runs on a GPU trainer) equals the CPU's."""
    transform = EvalTransform(48, 40, num_crops=3)
    items = [_item(transform, _frames(40, 48, 64, 1), 8, 4, video_index=0)[0],
             _item(transform, _frames(30, 96, 128, 2), 8, 4, video_index=1)[0]]
    batch = collate_views(items)
    keys = [batch[k] for k in VIEW_KEYS]
    want = BatchTransform().views(*keys)
    gpu = BatchTransform().views(*[k.cuda() if isinstance(k, torch.Tensor) else k for k in keys])
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), want, rtol=0, atol=1e-6)
