import logging
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from gnvideo.data import (
    ClipDataset,
    KineticsDataModule,
    KineticsDataset,
    VideoFilesDataset,
    load_label_names,
    read_annotations,
    views_of,
)
from gnvideo.data.transforms import EvalTransform, TrainTransform
from gnvideo.errors import ConfigError

LABELS = ["air drumming", "massaging person's head", "passing American football (in game)", "dance, modern"]
SMALL = dict(num_frames=4, sampling_rate=2)
TRAIN = dict(SMALL, transform=TrainTransform((48, 56), 40))
VAL = dict(SMALL, transform=EvalTransform(48, 40))
SMALL_VIEWS = dict(train_short_side_range=(48, 56), train_crop_size=40, val_short_side=48, val_crop_size=40,
                   test_short_side=48, test_crop_size=40)


def _row(label, yid, start=0, end=10, split="train"):
    quoted = '"' + label.replace('"', '""') + '"'
    return f"{quoted},{yid},{start},{end},{split},0\n"


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory, video_dir):
    """root/train/<label>/<id>_<s>_<e>.mp4 (nested) and root/val/<id>_<s>_<e>.{mp4,webm} (flat)."""
    root = tmp_path_factory.mktemp("kinetics")
    (root / "annotations").mkdir()
    (root / "labels.txt").write_text("\n".join(LABELS) + "\n")
    train = ["label,youtube_id,time_start,time_end,split,is_cc\n"]
    val = ["label,youtube_id,time_start,time_end,split\n"]
    for i, label in enumerate(LABELS * 2):
        yid = f"vid{i:03d}"
        folder = root / "train" / label
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(video_dir / "h264.mp4", folder / f"{yid}_000000_000010.mp4")
        train.append(_row(label, yid))
    (root / "val").mkdir()
    for i, label in enumerate(LABELS):
        yid = f"val{i:03d}"
        src = video_dir / ("vp9.webm" if i == 1 else "h264.mp4")
        shutil.copy(src, root / "val" / f"{yid}_000005_000015{src.suffix}")
        val.append(_row(label, yid, 5, 15, "val").rsplit(",", 1)[0] + "\n")
    (root / "annotations" / "train.csv").write_text("".join(train))
    (root / "annotations" / "val.csv").write_text("".join(val))
    return root


def test_label_names_packaged_and_custom(dataset_root):
    names = load_label_names()
    assert len(names) == 400 and names[0] == "abseiling" and "massaging person's head" in names
    assert load_label_names(dataset_root / "labels.txt") == LABELS


def test_csv_both_layouts_with_quoted_labels(dataset_root):
    train = read_annotations(dataset_root / "annotations/train.csv", dataset_root, "train", LABELS)
    assert [e.label for e in train] == [0, 1, 2, 3] * 2
    assert all(str(dataset_root / "train" / LABELS[e.label]) in e.path for e in train)
    val = read_annotations(dataset_root / "annotations/val.csv", dataset_root, "val", LABELS)
    assert val[1].path.endswith("val001_000005_000015.webm") and val[0].path.endswith(".mp4")


def test_list_file_with_index_and_name_labels(dataset_root, tmp_path):
    lst = tmp_path / "list.txt"
    lst.write_text("val000_000005_000015.mp4 2\nval001_000005_000015.webm\tmassaging person's head\n")
    entries = read_annotations(lst, dataset_root, "val", LABELS)
    assert [e.label for e in entries] == [2, 1]
    assert entries[0].path == str(dataset_root / "val" / "val000_000005_000015.mp4")


@pytest.mark.parametrize("row,message", [
    ('"no such class",abc,0,10,train,0\n', "unknown label"),
    ("air drumming,abc,zero,10,train,0\n", "malformed row"),
    ("air drumming,abc,0\n", "malformed row"),
])
def test_bad_csv_names_file_and_line(dataset_root, tmp_path, row, message):
    csv = tmp_path / "bad.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split,is_cc\n" + _row("air drumming", "ok") + row)
    with pytest.raises(ValueError, match=rf"bad\.csv:3: {message}"):
        read_annotations(csv, dataset_root, "train", LABELS)


def test_missing_root_and_annotation(dataset_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        read_annotations(dataset_root / "annotations/train.csv", tmp_path / "nowhere", "train", LABELS)
    with pytest.raises(FileNotFoundError, match="absent.csv"):
        read_annotations(tmp_path / "absent.csv", dataset_root, "train", LABELS)


def test_train_samples_reproducible_per_epoch(dataset_root):
    ds = KineticsDataset(dataset_root / "annotations/train.csv", dataset_root, "train", "train", LABELS, **TRAIN)
    a = ds[1]
    assert a["video"].shape == (4, 40, 40, 3) and a["valid"] and a["label"] == 1 and a["video_index"] == 1
    assert torch.equal(a["video"], ds[1]["video"])
    ds.set_epoch(1)
    assert not torch.equal(a["video"], ds[1]["video"])
    ds.set_epoch(0)
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=2)))
    single = next(iter(DataLoader(ds, batch_size=4, num_workers=0)))
    assert torch.equal(batch["video"], single["video"])  # independent of which worker loads an item
    assert set(batch) == {"video", "label", "video_index", "view_index", "valid", "flip", "box_size"}
    assert batch["video"].shape[0] == 4 and batch["video"].dtype == torch.uint8


def test_broken_videos(dataset_root, video_dir, tmp_path, caplog):
    root = tmp_path / "broken"
    shutil.copytree(dataset_root, root)
    folder = root / "train" / LABELS[0]
    (folder / "vid000_000000_000010.mp4").write_bytes(b"")  # zero bytes
    shutil.copy(video_dir / "truncated.mp4", folder / "vid004_000000_000010.mp4")
    (root / "train" / LABELS[1] / "vid001_000000_000010.mp4").unlink()  # missing
    shutil.copy(video_dir / "garbage.mp4", root / "val" / "val000_000005_000015.mp4")
    with caplog.at_level(logging.WARNING):
        train = KineticsDataset(root / "annotations/train.csv", root, "train", "train", LABELS, **TRAIN)
    assert train.num_missing == 1 and "1 of 8 videos are missing" in caplog.text
    samples = [train[i] for i in range(len(train))] + [train[0]]
    assert all(s["valid"] for s in samples) and all(s["video"].abs().sum() > 0 for s in samples)
    # 4 items hit a broken file first; a substitute may be broken too, so at least 4 failures, 3 distinct files
    assert train.num_skipped >= 4 and len(train.local_failure_reasons) == 3
    assert caplog.text.count("vid000_000000_000010.mp4 (") == 1  # logged once
    val = KineticsDataset(root / "annotations/val.csv", root, "val", "val", LABELS, **VAL)
    s = val[0]
    assert not s["valid"] and s["video"].shape == (4, 40, 40, 3) and s["video"].sum().sum() == 0
    assert val[1]["valid"] and val.num_skipped == 1


def test_exclude_list(dataset_root, tmp_path):
    excl = tmp_path / "exclude.txt"
    first = dataset_root / "train" / "air drumming" / "vid000_000000_000010.mp4"
    excl.write_text(f"{first}\tempty file\nvid001_000000_000010.mp4\n")
    ds = KineticsDataset(dataset_root / "annotations/train.csv", dataset_root, exclude_list=excl, label_names=LABELS)
    assert ds.num_videos == 6


def test_short_video_counts_repeats(video_dir):
    ds = VideoFilesDataset([video_dir / "short.mp4"], mode="val", **VAL)
    s = ds[0]
    assert s["valid"] and s["label"] == -1 and ds.num_repeated_frames == 1  # indices 0,2,4,6 of 5 frames


def test_test_mode_views_and_two_ranks(dataset_root):
    dm = KineticsDataModule(str(dataset_root), clips_per_device=5, num_workers=0, num_frames=4, sampling_rate=2,
                            train_short_side_range=(48, 56), train_crop_size=40, val_short_side=48, val_crop_size=40,
                            test_short_side=48, test_crop_size=48,
                            test_num_clips=2, test_num_crops=3, pin_memory=False)
    assert dm.num_classes == 4
    dm.setup("test")
    ds = dm.test_dataset
    assert len(ds) == 4 and ds.views_per_video == 6  # one item per video, holding its 6 views
    seen = []
    for rank in range(2):
        dm._replicas = lambda rank=rank: (2, rank)
        for batch in dm.test_dataloader():
            assert views_of(batch).shape[1:] == (4, 48, 48, 3) and batch["valid"].all()
            seen += list(zip(batch["video_index"].tolist(), batch["view_index"].tolist()))
    assert sorted(seen) == [(v, w) for v in range(4) for w in range(6)]  # every view exactly once


def test_datamodule_train_ranks_and_errors(dataset_root, tmp_path):
    dm = KineticsDataModule(str(dataset_root), clips_per_device=2, num_workers=0, num_frames=4,
                            **SMALL_VIEWS, pin_memory=False)
    dm.setup("fit")
    halves = []
    for rank in range(2):
        dm._replicas = lambda rank=rank: (2, rank)
        loader = dm.train_dataloader()
        assert not loader.persistent_workers
        halves.append(list(loader.sampler))
    assert not set(halves[0]) & set(halves[1]) and len(halves[0]) + len(halves[1]) == 8
    assert len(dm.val_dataset) == 4
    with pytest.raises(ConfigError, match="data.root: dataset folder not found: .*nowhere"):
        KineticsDataModule(str(tmp_path / "nowhere")).setup("fit")
    assert KineticsDataModule(str(tmp_path / "nowhere")).num_classes == 400
    dm.hparams.clips_per_device = 5  # 8 videos on 2 devices: 4 each, no batch of 5 (fits on one device)
    dm._check_batches(1)
    with pytest.raises(ConfigError, match=r"data\.clips_per_device: the train split has 8 usable videos .*"
                                          r"fewer than one batch of 5 clips on each of 2 devices: 0 batches"):
        dm.train_dataloader()


@pytest.mark.parametrize("train_flip_prob", [0.0, 1.0])
def test_datamodule_train_flip_prob_reaches_training_clips(dataset_root, train_flip_prob):
    """train_flip_prob=0 keeps left/right motion intact (direction classes); 1 always mirrors the training crop."""
    common = dict(clips_per_device=1, num_workers=0, num_frames=4, train_short_side_range=(48, 48), train_crop_size=48,
                  val_short_side=48, val_crop_size=48, test_short_side=48, test_crop_size=48, pin_memory=False)
    dm = KineticsDataModule(str(dataset_root), train_flip_prob=train_flip_prob, **common)
    dm.setup("fit")
    assert dm.train_dataset.transform.flip_prob == train_flip_prob
    frames = torch.randint(0, 256, (4, 48, 64, 3), dtype=torch.uint8)
    crop, flip, _ = dm.train_dataset.transform(frames, generator=torch.Generator().manual_seed(0))
    unflipped, never, _ = dm.train_dataset.transform.__class__((48, 48), 48, flip_prob=0.0)(
        frames, generator=torch.Generator().manual_seed(0))
    assert torch.equal(crop, unflipped) and flip == (train_flip_prob == 1.0) and not never
    flipped = dm.batch_transform(crop.unsqueeze(0), torch.tensor([flip]))
    want = dm.batch_transform(unflipped.unsqueeze(0))
    assert torch.equal(flipped, want if train_flip_prob == 0.0 else want.flip(-1))


def test_epoch_reaches_persistent_workers(dataset_root):
    from gnvideo.data import EpochDistributedSampler

    ds = KineticsDataset(dataset_root / "annotations/train.csv", dataset_root, "train", "train", LABELS, **TRAIN)
    sampler = EpochDistributedSampler(ds, shuffle=False)
    loader = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=1, persistent_workers=True)
    first = next(iter(loader))["video"]
    sampler.set_epoch(1)  # what Lightning calls at each epoch start
    second = next(iter(loader))["video"]
    assert ds.epoch == 1 and not torch.equal(first, second)
    assert torch.equal(second[3], ds[3]["video"])  # the worker used epoch 1 too


def test_lightning_keeps_our_samplers_and_advances_the_epoch(dataset_root):
    import lightning.pytorch as pl

    from gnvideo.data import EpochDistributedSampler, UnpaddedDistributedSampler

    epochs_seen = []

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(3, 4)

        def training_step(self, batch, batch_idx):
            epochs_seen.append(self.trainer.datamodule.train_dataset.epoch)
            return self.layer(batch["video"].float().mean((1, 2, 3))).sum()

        def validation_step(self, batch, batch_idx):
            assert batch["valid"].all()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    dm = KineticsDataModule(str(dataset_root), clips_per_device=4, num_workers=0, num_frames=4,
                            **SMALL_VIEWS, pin_memory=False)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_train_batches=1,
                         limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(Tiny(), dm)
    assert epochs_seen == [0, 1]
    assert isinstance(trainer.train_dataloader.sampler, EpochDistributedSampler)
    assert isinstance(trainer.val_dataloaders.sampler, UnpaddedDistributedSampler)


def test_predict_files_folder_and_list(dataset_root, tmp_path):
    listing = tmp_path / "predict.txt"
    listing.write_text(f"{dataset_root / 'val' / 'val000_000005_000015.mp4'}\n{tmp_path / 'gone.mp4'}\n")
    dm = KineticsDataModule(str(dataset_root), clips_per_device=3, num_workers=0, num_frames=4, test_short_side=48,
                            test_crop_size=40, test_num_clips=1, test_num_crops=3, pin_memory=False,
                            predict_files=str(listing))
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert [b["valid"].tolist() for b in batches] == [[True] * 3, [False] * 3]
    assert batches[0]["label"].tolist() == [-1] * 3 and views_of(batches[0]).shape == (3, 4, 40, 40, 3)
    folder = VideoFilesDataset(dataset_root / "val", mode="val", **VAL)
    assert folder.num_videos == 4 and folder.paths == sorted(folder.paths)
    with pytest.raises(ValueError, match="predict_files"):
        KineticsDataModule(str(dataset_root)).setup("predict")


def test_val_and_test_views_have_their_own_options_passed_once(dataset_root):
    """data.val_* sizes validation, data.test_* sizes test: each split's dataset holds the DataModule's transform."""
    dm = KineticsDataModule(str(dataset_root), clips_per_device=2, num_workers=0, num_frames=4, pin_memory=False,
                            train_short_side_range=(48, 56), train_crop_size=40, train_flip_prob=0.25,
                            val_short_side=36, val_crop_size=32, test_short_side=48, test_crop_size=44,
                            test_num_clips=2, test_num_crops=3)
    dm.setup("fit")
    dm.setup("test")
    assert dm.train_dataset.transform is dm.train_transform
    assert (dm.train_transform.short_side_range, dm.train_transform.crop_size, dm.train_transform.flip_prob) == (
        (48, 56), 40, 0.25)
    assert dm.val_dataset.transform is dm.val_transform and dm.test_dataset.transform is dm.test_transform
    assert next(iter(dm.val_dataloader()))["video"].shape[1:] == (4, 32, 32, 3)
    test_batch = next(iter(dm.test_dataloader()))
    assert views_of(test_batch).shape[1:] == (4, 44, 44, 3) and dm.test_dataset.views_per_video == 6


@pytest.mark.parametrize(("option", "value", "key"), [
    ("train_crop_size", 400, "data.train_crop_size"),
    ("train_flip_prob", 2.0, "data.train_flip_prob"),
    ("val_crop_size", 300, "data.val_crop_size"),
    ("test_num_crops", 2, "data.test_num_crops"),
])
def test_bad_view_option_is_named_at_construction(dataset_root, option, value, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        KineticsDataModule(str(dataset_root), num_workers=0, **{option: value})


def test_dataset_rejects_a_transform_of_the_wrong_kind(dataset_root):
    entries = read_annotations(dataset_root / "annotations/train.csv", dataset_root, "train", LABELS)
    with pytest.raises(ValueError, match="train mode needs a TrainTransform"):
        ClipDataset(entries, "train", LABELS, EvalTransform(48, 40))
    with pytest.raises(ValueError, match="num_crops=1"):
        ClipDataset(entries, "val", LABELS, EvalTransform(48, 40, num_crops=3))


@pytest.mark.parametrize(("option", "device", "expected"), [
    (None, "cpu", False), (None, "cuda", True), (True, "cpu", True), (False, "cuda", False)])
def test_crops_enlarged_and_views_cut_on_the_accelerator_by_default(dataset_root, option, device, expected):
    from types import SimpleNamespace

    dm = KineticsDataModule(str(dataset_root), clips_per_device=2, num_workers=0, num_frames=4, pin_memory=False,
                            train_upscale_on_device=option, **SMALL_VIEWS)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    dm.setup("fit")
    assert dm.train_dataset.transform.upscale_on_device is expected
    dm = KineticsDataModule(str(dataset_root), clips_per_device=2, num_workers=0, num_frames=4, pin_memory=False,
                            test_views_on_device=option, **SMALL_VIEWS)
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))
    dm.setup("test")
    assert dm.test_dataset.transform.views_on_device is expected  # and test views are cut on the device likewise


def test_test_views_on_device_follows_the_trainer_unless_set(dataset_root):
    """data.test_views_on_device: None = cut in the workers on a CPU trainer; true sends frames once and where the
    views lie, and the views are the same."""
    kwargs = dict(clips_per_device=12, num_workers=0, num_frames=4, sampling_rate=2, test_short_side=48,
                  test_crop_size=40, test_num_clips=2, test_num_crops=3, pin_memory=False)
    batches = {}
    for option in (None, False, True):
        dm = KineticsDataModule(str(dataset_root), test_views_on_device=option, **kwargs)
        dm.setup("test")
        assert dm.test_transform.views_on_device is bool(option)
        batches[option] = next(iter(dm.test_dataloader()))
    assert "frames" in batches[True] and "frames" not in batches[None] and "video" in batches[False]
    assert torch.equal(views_of(batches[True]), batches[False]["video"])
    assert views_of(batches[True]).shape == (12, 4, 40, 40, 3)  # 2 videos x 2 clips x 3 crops
    assert batches[True]["video_index"].tolist() == batches[False]["video_index"].tolist()
