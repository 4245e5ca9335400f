import pytest
import torch

from gnvideo.data.sampling import (
    EpochDistributedSampler,
    UnpaddedDistributedSampler,
    clip_span,
    eval_clip_indices,
    sample_generator,
    train_clip_indices,
)
from gnvideo.data.transforms import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, EvalTransform, TrainTransform


@pytest.mark.parametrize("t,rate", [(32, 2), (64, 1), (8, 8), (16, 4)])
def test_train_clip_indices_stay_inside(t, rate):
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        idx = train_clip_indices(300, t, rate, g)
        assert len(idx) == t and idx[0] >= 0 and idx[-1] < 300
        assert all(b - a == rate for a, b in zip(idx, idx[1:]))
    assert clip_span(t, rate) == (t - 1) * rate + 1


def test_train_clip_on_short_video_starts_at_zero():
    assert train_clip_indices(10, 8, 2, torch.Generator().manual_seed(3)) == list(range(0, 16, 2))


def test_sample_generator_is_reproducible_and_varies():
    def draw(*key):
        return train_clip_indices(1000, 8, 2, sample_generator(*key))[0]

    assert draw(0, 1, 5) == draw(0, 1, 5)
    starts = {draw(0, epoch, 5) for epoch in range(8)}
    assert len(starts) > 4  # differs per epoch
    assert len({draw(0, 0, i) for i in range(8)}) > 4  # and per item
    assert draw(0, 0, 5) != draw(1, 0, 5) or draw(0, 1, 5) != draw(1, 1, 5)  # and per seed


def test_eval_clip_indices_uniform():
    clips = eval_clip_indices(100, 8, 2, 10)
    assert len(clips) == 10 and clips[0][0] == 0 and clips[-1][-1] == 99
    starts = [c[0] for c in clips]
    assert starts == sorted(starts) and max(b - a for a, b in zip(starts, starts[1:])) <= 10
    assert eval_clip_indices(100, 8, 2, 1) == [list(range(42, 57, 2))]  # the centre clip
    assert eval_clip_indices(5, 4, 2, 3) == [[0, 2, 4, 6]] * 3


def test_train_transform_shapes_and_values():
    video = torch.randint(0, 256, (6, 48, 80, 3), dtype=torch.uint8)
    tf = TrainTransform((64, 72), 56, upscale_on_device=True)
    out, flip, box = tf(video, torch.Generator().manual_seed(0))
    assert out.shape == (6, 56, 56, 3) and out.dtype == torch.uint8 and isinstance(flip, bool)
    assert 37 <= box <= 42  # 56 px of a short side of 64..72 drawn from 48: the box is enlarged on the device
    again, flip_again, box_again = tf(video, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and flip == flip_again and box == box_again
    white, _, box = tf(torch.full((2, 48, 80, 3), 255, dtype=torch.uint8))
    assert bool((white[:, :box, :box] == 255).all()) and not white[:, box:].any()  # the box as it is, zeros beyond
    normed = BatchTransform(IMAGENET_MEAN, IMAGENET_STD)(white.unsqueeze(0))
    expected = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)])
    assert normed.dtype == torch.float32
    assert torch.allclose(normed[0, :, :, 10, 10], expected[:, None].expand(3, 2), atol=1e-5)


def test_train_transform_flips_and_crops_randomly():
    video = torch.arange(80, dtype=torch.uint8).view(1, 1, 80, 1).expand(2, 64, 80, 3).contiguous()
    tf = TrainTransform((64, 64), 64)
    device = BatchTransform((0, 0, 0), (1 / 255,) * 3)  # identity scale: values stay 0..255
    draws = [tf(video, torch.Generator().manual_seed(s)) for s in range(20)]
    batch = torch.stack([clip for clip, _, _ in draws])
    flips = torch.tensor([flip for _, flip, _ in draws])
    assert all(box == 64 for _, _, box in draws)  # scale 1: the crop is final
    rows = device(batch, flips)[:, 0, 0, 0]
    increasing = [bool(r[-1] > r[0]) for r in rows]
    assert any(increasing) and not all(increasing)  # flipped sometimes
    assert increasing == [not f for f in flips.tolist()]  # exactly the clips drawn to flip
    assert len({float(r.min()) for r in rows}) > 3  # different horizontal offsets


def test_eval_transform_crops():
    video = torch.arange(120, dtype=torch.uint8).view(1, 1, 120, 1).expand(3, 60, 120, 3).contiguous()
    tf = EvalTransform(short_side=60, crop_size=60, num_crops=3)
    crops = tf(video)
    assert len(crops) == 3 and all(c.shape == (3, 60, 60, 3) and c.dtype == torch.uint8 for c in crops)
    lefts = [float(c[0, 0, 0, 0]) for c in crops]  # (T, H, W, 3): frame 0, row 0, column 0
    assert lefts[0] < 2 and abs(lefts[1] - 30) < 2 and abs(lefts[2] - 60) < 2  # left, centre, right
    assert torch.equal(tf(video, crop_index=2), crops[2])
    one = EvalTransform(short_side=30, crop_size=24, num_crops=1)(video)
    assert len(one) == 1 and one[0].shape == (3, 24, 24, 3)
    portrait = EvalTransform(short_side=32, crop_size=32, num_crops=3)(video.transpose(1, 2).contiguous())
    assert all(c.shape == (3, 32, 32, 3) for c in portrait)


def test_transform_argument_errors():
    with pytest.raises(ValueError, match="crop_size"):
        TrainTransform((64, 80), 96)
    with pytest.raises(ValueError, match="num_crops"):
        EvalTransform(num_crops=2)
    with pytest.raises(ValueError, match="uint8"):
        TrainTransform((64, 80), 64)(torch.zeros(2, 3, 64, 64))


def test_distributed_samplers_split_without_overlap():
    data = list(range(11))
    parts = [list(UnpaddedDistributedSampler(data, 2, r)) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == data and not set(parts[0]) & set(parts[1])
    train = [EpochDistributedSampler(data, 2, r, seed=0) for r in range(2)]
    seen = [list(s) for s in train]
    assert set(seen[0]) | set(seen[1]) == set(data) and len(seen[0]) == len(seen[1]) == 6
    for s in train:
        s.set_epoch(1)
    assert [list(s) for s in train] != seen
