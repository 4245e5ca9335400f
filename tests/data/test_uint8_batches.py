"""uint8 batches from the workers, normalisation and flip on the device, one decoder per multi-view test video."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

import gnvideo.data.kinetics as kinetics
from gnvideo.data import ClipDataset, VideoEntry, collate_views, eval_clip_indices, open_video, views_of
from gnvideo.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchTransform,
    EvalTransform,
    TrainTransform,
)

SMALL = dict(num_frames=4, sampling_rate=2)
TRAIN = dict(SMALL, transform=TrainTransform((48, 56), 40))
VAL = dict(SMALL, transform=EvalTransform(48, 40))
TEST_3X3 = dict(SMALL, transform=EvalTransform(48, 40, num_crops=3), num_clips=3)


def _former_cpu_path(clip: torch.Tensor, flip: bool, mean, std) -> torch.Tensor:
    """What the workers did before (the former ``_Normalize.finish``): flip, then float32 (3, T, h, w) normalised
    with per-channel scalars, x * (1 / (255 std)) + (-mean / std). ``clip``: uint8 (T, h, w, 3) as now returned."""
    frames_tchw = clip.permute(0, 3, 1, 2)  # the former transforms' (T, 3, h, w) resize output
    if flip:
        frames_tchw = frames_tchw.flip(-1)
    t, _, h, w = frames_tchw.shape
    x = torch.empty((3, t, h, w), dtype=torch.float32)
    x.copy_(frames_tchw.permute(1, 0, 2, 3))
    for c in range(3):
        x[c].mul_(1.0 / (255.0 * std[c])).add_(-mean[c] / std[c])
    return x


@pytest.mark.parametrize("mean,std", [(IMAGENET_MEAN, IMAGENET_STD), ((0.45,) * 3, (0.225,) * 3)])
def test_device_normalisation_equals_the_former_cpu_path(mean, std):
    """Same clip, crop and flip draw: the device path (box enlarged there) against the former CPU path (uint8
    resized crop in the worker, then flip and normalisation): equal up to the uint8 rounding of the CPU resize."""
    video = torch.randint(0, 256, (6, 50, 70, 3), dtype=torch.uint8)
    tf = TrainTransform((48, 60), 40, flip_prob=0.5, upscale_on_device=True)
    cpu_tf = TrainTransform((48, 60), 40, flip_prob=0.5)
    clips, flips, boxes, former = [], [], [], []
    for seed in range(16):
        clip, flip, box = tf(video, torch.Generator().manual_seed(seed))
        cpu_clip, cpu_flip, cpu_box = cpu_tf(video, torch.Generator().manual_seed(seed))
        assert cpu_flip == flip and cpu_box == 40
        clips.append(clip)
        flips.append(flip)
        boxes.append(box)
        former.append(_former_cpu_path(cpu_clip, flip, mean, std))
    assert any(flips) and not all(flips)
    boxes = torch.tensor(boxes)
    assert (boxes < 40).any() and (boxes == 40).any() and (boxes > 40).sum() == 0  # short side 48..60 of 50 px
    got = BatchTransform(mean, std)(torch.stack(clips), torch.tensor(flips), boxes)
    want = torch.stack(former)
    assert got.dtype == torch.float32 and got.shape == want.shape == (16, 3, 6, 40, 40)
    err = (got - want).abs().amax(dim=(1, 2, 3, 4))
    assert err[boxes == 40].max() <= 1e-6  # a finished crop: exactly the former path
    assert err[boxes < 40].max() <= 1.0 / (255 * min(std)) + 1e-5  # enlarged on the device: within one uint8 level
    views = EvalTransform(48, 40, num_crops=3)(video)  # eval views: no flip
    got = BatchTransform(mean, std)(torch.stack(views))
    want = torch.stack([_former_cpu_path(v, False, mean, std) for v in views])
    assert (got - want).abs().max() <= 1e-6


def test_worker_sends_the_source_box_of_an_enlarging_crop():
    """When the scale enlarges, the worker only crops: the clip's top-left holds the source pixels of the box."""
    video = torch.randint(0, 256, (3, 48, 64, 3), dtype=torch.uint8)
    tf = TrainTransform((60, 60), 40, upscale_on_device=True)
    clip, _, box = tf(video, torch.Generator().manual_seed(1))
    assert box == 32  # 40 px at a short side of 60 are 32 source pixels of 48
    found = [(y, x) for y in range(48 - box + 1) for x in range(64 - box + 1)
             if torch.equal(video[:, y:y + box, x:x + box], clip[:, :box, :box])]
    assert len(found) == 1 and not clip[:, box:].any() and not clip[:, :, box:].any()


@pytest.mark.parametrize("prob", [0.0, 0.3, 1.0])
def test_flip_probability_is_respected_and_reproducible(prob):
    tf = TrainTransform((8, 8), 8, flip_prob=prob)
    video = torch.zeros(1, 8, 8, 3, dtype=torch.uint8)
    draws = [tf(video, torch.Generator().manual_seed(s)).flip for s in range(2000)]
    rate = sum(draws) / len(draws)
    assert abs(rate - prob) < 0.04, rate  # 4 standard deviations at p = 0.3
    assert draws[:50] == [tf(video, torch.Generator().manual_seed(s))[1] for s in range(50)]


def test_batch_transform_flips_only_flagged_rows_and_keeps_float_input():
    video = torch.arange(5, dtype=torch.uint8).view(1, 1, 1, 5, 1).expand(3, 2, 4, 5, 3).contiguous()  # N T H W C
    out = BatchTransform((0, 0, 0), (1 / 255,) * 3)(video, torch.tensor([True, False, True]))
    assert out[0, 0, 0, 0].tolist() == [4, 3, 2, 1, 0] and out[1, 0, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert out[2, 0, 0, 0].tolist() == [4, 3, 2, 1, 0]
    assert BatchTransform()(out) is out  # already float: left alone
    assert out.shape == (3, 3, 2, 4, 5) and out.is_contiguous()  # (N, 3, T, H, W)
    with pytest.raises(ValueError, match="N, T, H, W, 3"):
        BatchTransform()(video[0])


def test_transfer_size_per_batch_is_four_times_smaller(video_dir):
    entries = [VideoEntry(str(video_dir / "h264.mp4"), 0), VideoEntry(str(video_dir / "big.mp4"), 1)] * 2
    ds = ClipDataset(entries, "train", ["a", "b"], **TRAIN)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    video = batch["video"]
    assert video.dtype == torch.uint8 and video.shape == (4, 4, 40, 40, 3) and video.is_contiguous()
    after = video.numel() * video.element_size()
    before = BatchTransform()(video, batch["flip"])  # what the workers used to send: float32
    assert after == 4 * 3 * 4 * 40 * 40 and before.numel() * before.element_size() == 4 * after


def test_module_normalises_uint8_batches_in_the_hook():
    from gnvideo.training.module import VideoClassifier

    model = VideoClassifier(backbone="tiny_r3d", num_classes=3)
    batch = {"video": torch.full((2, 4, 16, 16, 3), 255, dtype=torch.uint8), "flip": torch.tensor([False, True])}
    with pytest.raises(RuntimeError, match="BatchTransform"):
        model.on_after_batch_transfer(batch, 0)
    model.batch_transform = BatchTransform((0.5,) * 3, (0.25,) * 3)
    out = model.on_after_batch_transfer(batch, 0)
    assert out["video"].dtype == torch.float32 and torch.allclose(out["video"], torch.full_like(out["video"], 2.0))
    assert batch["video"].dtype == torch.uint8  # the input dict is not changed in place
    boxed = torch.zeros((2, 4, 16, 16, 3), dtype=torch.uint8)
    boxed[:, :, :8, :8] = 255  # an 8 x 8 source box in both clips; only the first is marked as one
    out = model.on_after_batch_transfer({"video": boxed, "box_size": torch.tensor([8, 16])}, 0)["video"]
    assert torch.allclose(out[0], torch.full_like(out[0], 2.0))  # enlarged to the whole crop
    assert torch.allclose(out[1, :, :, 8:], torch.full_like(out[1, :, :, 8:], -2.0))  # a finished crop: left as is


class _CountingReader:
    """Wraps a reader; counts reads (``frames`` and ``frames_through`` calls)."""

    def __init__(self, reader, counts):
        self._reader, self._counts = reader, counts

    def frames(self, indices):
        self._counts["frames"] += 1
        return self._reader.frames(indices)

    def frames_through(self, indices, fn, close=False):
        self._counts["frames"] += 1
        return self._reader.frames_through(indices, fn, close=close)

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._reader.close()


def _per_view_reference(ds: ClipDataset, mean, std) -> list[tuple[int, int, torch.Tensor]]:
    """The former path: one open and one read per view, normalised on the CPU."""
    out = []
    for v, entry in enumerate(ds.entries):
        for clip in range(ds.num_clips):
            for crop in range(ds.num_crops):
                with open_video(entry.path) as reader:
                    idx = eval_clip_indices(reader.frame_count, ds.num_frames, ds.sampling_rate, ds.num_clips)[clip]
                    frames = reader.frames(idx)
                view = ds.transform(frames, crop_index=crop)
                out.append((v, clip * ds.num_crops + crop, _former_cpu_path(view, False, mean, std)))
    return out


@pytest.mark.parametrize("on_device", [False, True], ids=["views_in_worker", "views_on_device"])
def test_one_decoder_and_one_read_per_test_video_and_the_same_scores(video_dir, monkeypatch, on_device):
    from gnvideo.evaluation import MultiViewAggregator, video_metrics
    from gnvideo.training.module import VideoClassifier

    names = ["h264.mp4", "big.mp4", "vp9.webm", "garbage.mp4"]
    entries = [VideoEntry(str(video_dir / n), i % 2) for i, n in enumerate(names)]
    ds = ClipDataset(entries, "test", ["a", "b"],
                     **dict(TEST_3X3, transform=EvalTransform(48, 40, num_crops=3, views_on_device=on_device)))
    reference = _per_view_reference(ClipDataset(entries[:3], "test", ["a", "b"], **TEST_3X3),
                                    IMAGENET_MEAN, IMAGENET_STD)
    counts = {"open": 0, "frames": 0}

    def counting(opener):
        def counting_open(*args, **kwargs):
            counts["open"] += 1
            return _CountingReader(opener(*args, **kwargs), counts)

        return counting_open

    for name in ("open_video", "open_sandboxed"):  # in-process and in the decode child (the default)
        monkeypatch.setattr(kinetics, name, counting(getattr(kinetics, name)))
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_views))
    assert counts == {"open": 4, "frames": 3}  # one open per video (the garbage file fails to open), one read each
    assert [views_of(b).shape[:2] for b in batches] == [(18, 4), (18, 4)]
    assert all(("frames" in b) == on_device for b in batches)
    batch = collate_views([ds[i] for i in range(len(ds))])
    assert batch["valid"].tolist() == [True] * 27 + [False] * 9
    assert batch["video_index"].tolist() == [v for v in range(4) for _ in range(9)]
    assert batch["view_index"].tolist() == list(range(9)) * 4
    views = views_of(batch)
    assert views.shape == (36, 4, 40, 40, 3) and not views[27:].any()  # the broken video's views: zeros
    model_side = VideoClassifier(backbone="tiny_r3d", num_classes=2)
    model_side.batch_transform = BatchTransform()
    normed = model_side.on_after_batch_transfer(batch, 0)["video"]
    assert torch.equal(normed, BatchTransform()(views))  # cut and normalised in one pass: the same values
    for (v, view, want), got in zip(reference, normed[:27]):
        assert (got - want).abs().max() <= 1e-6, (v, view)

    model = VideoClassifier(backbone="tiny_r3d", num_classes=2, clips_per_device=4).eval()
    model.batch_transform = BatchTransform()
    agg = MultiViewAggregator(2)
    with torch.no_grad():
        for b in batches:
            model._add_views(agg, model.on_after_batch_transfer(b, 0))
        ref = MultiViewAggregator(2)
        ref_probs = model(torch.stack([w for _, _, w in reference])).softmax(1)
        ref.update(ref_probs, torch.tensor([v for v, _, _ in reference]),
                   torch.tensor([v % 2 for v, _, _ in reference]))
        ref.update_invalid(torch.tensor([3]))
    got, want = agg.local_scores(), ref.local_scores()
    assert got.mean_probs()[0].tolist() == want.mean_probs()[0].tolist() == [0, 1, 2]  # the broken video unscored
    torch.testing.assert_close(got.mean_probs()[1], want.mean_probs()[1], atol=1e-5, rtol=0)
    assert video_metrics(got, 2) == video_metrics(want, 2)


def test_training_and_precise_bn_get_normalised_float_input(video_dir, tmp_path):
    import lightning.pytorch as pl

    from gnvideo.data import KineticsDataModule
    from gnvideo.training.callbacks import PreciseBN
    from gnvideo.training.module import VideoClassifier

    entries = [VideoEntry(str(video_dir / "h264.mp4"), 0), VideoEntry(str(video_dir / "big.mp4"), 1)] * 2
    dm = KineticsDataModule(str(video_dir), clips_per_device=2, num_workers=0, pin_memory=False, num_frames=4,
                            train_crop_size=40, mean=(0.5,) * 3, std=(0.25,) * 3)
    dm.train_dataset = ClipDataset(entries, "train", ["a", "b"], **TRAIN)
    dm.train_dataset.annotation = "in memory"
    dm.val_dataset = ClipDataset(entries[:2], "val", ["a", "b"], **VAL)
    model = VideoClassifier(backbone="tiny_r3d", num_classes=2, norm="bn", clips_per_device=2)
    seen = []  # (training mode, grad enabled, dtype, min, max) of every model input

    def record(module, args):
        x = args[0]
        seen.append((module.training, torch.is_grad_enabled(), x.dtype, float(x.min()), float(x.max())))

    model.model.register_forward_pre_hook(record)
    trainer = pl.Trainer(max_steps=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1,
                         limit_val_batches=1, num_sanity_val_steps=0, callbacks=[PreciseBN(num_batches=1)],
                         default_root_dir=tmp_path)
    trainer.fit(model, dm)
    precise = [s for s in seen if s[0] and not s[1]]  # train mode without gradients: PreciseBN's passes
    assert precise and any(s[0] and s[1] for s in seen)
    assert all(s[2] == torch.float32 and -2.0 - 1e-6 <= s[3] and s[4] <= 2.0 + 1e-6 for s in seen)  # (x/255-.5)/.25
