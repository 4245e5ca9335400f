"""Synthetic motion dataset: layout, annotation files, determinism, skip-if-complete, class = motion only."""

from __future__ import annotations

import csv
import dataclasses
import math

import av
import numpy as np
import pytest

from gnvideo.data.layout import ANNOTATION_COLUMNS, clip_filename
from gnvideo.data.synthetic import (
    CLASS_NAMES,
    COMPLETE_MARKER,
    make_synthetic_dataset,
    render_clip,
    sample_clip_params,
)

SMALL = {"num_classes": 3, "videos_per_class": 2, "val_videos_per_class": 1, "workers": 2,
         "short_side_range": (32, 40), "fps_range": (8, 12), "duration_range": (0.5, 1.0)}


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def decode(path):
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        info = (stream.codec_context.name, stream.codec_context.pix_fmt, float(stream.average_rate))
        return info, np.stack([f.to_ndarray(format="rgb24") for f in c.decode(stream)])


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "ds"
    summary = make_synthetic_dataset(root, seed=3, **SMALL)
    return root, summary


def test_layout_and_annotations(small_dataset):
    root, summary = small_dataset
    assert not summary.skipped and summary.num_train == 6 and summary.num_val == 3
    assert (root / "labels.txt").read_text().splitlines() == list(CLASS_NAMES[:3]) == summary.label_names
    ids = set()
    for split, per_class in (("train", 2), ("val", 1)):
        rows = read_csv(root / "annotations" / f"{split}.csv")
        assert tuple(rows[0]) == ANNOTATION_COLUMNS
        body = rows[1:]
        assert len(body) == 3 * per_class
        for label, yid, start, end, row_split in body:
            assert row_split == split and label in CLASS_NAMES[:3]
            assert len(yid) == 11 and yid not in ids
            ids.add(yid)
            assert 0 <= int(start) < int(end)
            path = root / split / label / clip_filename(yid, int(start), int(end))
            assert path.is_file(), path
            (codec, pix_fmt, fps), frames = decode(path)
            assert (codec, pix_fmt) == ("h264", "yuv420p") and 8 <= fps <= 12
            t, h, w, _ = frames.shape
            assert 32 <= min(h, w) <= 40 and t >= 4
        assert sorted(p.parent.name for p in (root / split).rglob("*.mp4")) == sorted(r[0] for r in body)
    assert (root / COMPLETE_MARKER).is_file()
    assert not list(root.rglob(".*partial")) and not list(root.rglob("*.tmp*"))


def test_labels_with_parentheses_are_quoted(tmp_path):
    root = tmp_path / "ds"
    make_synthetic_dataset(root, num_classes=6, videos_per_class=1, val_videos_per_class=0, workers=0,
                           short_side_range=(32, 32), fps_range=(8, 8), duration_range=(0.3, 0.3))
    text = (root / "annotations" / "train.csv").read_text()
    assert '"rotating (counter-clockwise)",' in text
    assert {r[0] for r in read_csv(root / "annotations" / "train.csv")[1:]} == set(CLASS_NAMES[:6])
    assert read_csv(root / "annotations" / "val.csv") == [list(ANNOTATION_COLUMNS)]


def test_seeded_determinism(small_dataset, tmp_path):
    root, _ = small_dataset
    again = tmp_path / "again"
    make_synthetic_dataset(again, seed=3, **{**SMALL, "workers": 0})
    for name in ("train.csv", "val.csv"):
        assert (root / "annotations" / name).read_bytes() == (again / "annotations" / name).read_bytes()
    label, yid, start, end, split = read_csv(root / "annotations" / "train.csv")[1]
    rel = f"{split}/{label}/{clip_filename(yid, int(start), int(end))}"
    assert np.array_equal(decode(root / rel)[1], decode(again / rel)[1])
    videos = sorted(p.relative_to(root) for p in root.rglob("*.mp4"))
    assert videos == sorted(p.relative_to(again) for p in again.rglob("*.mp4"))
    assert all((root / v).read_bytes() == (again / v).read_bytes() for v in videos)  # 2 workers vs in-process
    other = tmp_path / "other"
    make_synthetic_dataset(other, seed=4, **{**SMALL, "workers": 0})
    assert (root / "annotations" / "train.csv").read_bytes() != (other / "annotations" / "train.csv").read_bytes()


def test_skip_if_complete(small_dataset):
    root, _ = small_dataset
    video = next(root.rglob("*.mp4"))
    before = (video.stat().st_mtime_ns, (root / COMPLETE_MARKER).stat().st_mtime_ns)
    summary = make_synthetic_dataset(root, seed=3, **SMALL)
    assert summary.skipped
    assert (video.stat().st_mtime_ns, (root / COMPLETE_MARKER).stat().st_mtime_ns) == before
    with pytest.raises(ValueError, match="other settings"):
        make_synthetic_dataset(root, seed=4, **SMALL)


def test_incomplete_dataset_is_repaired(tmp_path):
    root = tmp_path / "ds"
    kwargs = {**SMALL, "num_classes": 2, "videos_per_class": 2, "val_videos_per_class": 0, "workers": 0}
    make_synthetic_dataset(root, **kwargs)
    lost, kept = sorted(root.rglob("*.mp4"))[:2]
    original, stamp = lost.read_bytes(), kept.stat().st_mtime_ns
    lost.unlink()
    (root / "annotations" / "val.csv").unlink()
    assert not make_synthetic_dataset(root, **kwargs).skipped  # files missing despite the marker: redo them
    assert lost.read_bytes() == original and kept.stat().st_mtime_ns == stamp  # only the lost file, identically
    assert (root / "annotations" / "val.csv").is_file()
    (root / COMPLETE_MARKER).unlink()  # an interrupted run (no marker) starts over
    assert not make_synthetic_dataset(root, **kwargs).skipped
    assert (root / COMPLETE_MARKER).is_file() and make_synthetic_dataset(root, **kwargs).skipped


@pytest.mark.parametrize("bad", [{"num_classes": 1}, {"num_classes": 9}, {"videos_per_class": 0},
                                 {"fps_range": (0, 5)}])
def test_bad_arguments(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        make_synthetic_dataset(tmp_path / "x", **{**SMALL, **bad})


@pytest.mark.parametrize("seed", range(4))
def test_first_frame_is_independent_of_the_class(seed):
    clips = [render_clip(sample_clip_params(np.random.default_rng(seed), k)) for k in range(len(CLASS_NAMES))]
    for clip in clips[1:]:
        assert clip.shape == clips[0].shape
        assert np.array_equal(clip[0], clips[0][0])
    # ... while later frames differ between every pair of classes
    for i in range(len(clips)):
        for j in range(i + 1, len(clips)):
            assert np.abs(clips[i][-1].astype(int) - clips[j][-1].astype(int)).mean() > 0.5, (i, j)


def test_first_frame_statistics_match_across_classes():
    def first_frame(k, s):
        return render_clip(dataclasses.replace(sample_clip_params(np.random.default_rng([k, s]), k), num_frames=1))[0]

    means = np.array([[first_frame(k, s).mean() for s in range(12)] for k in range(len(CLASS_NAMES))])
    standard_error = means.std(axis=1).mean() / math.sqrt(means.shape[1])
    assert np.abs(means.mean(axis=1) - means.mean()).max() < 4 * standard_error  # class means agree within noise


def _track(alpha):
    """Per-frame centroid (x, y), area and major-axis angle (rad, y down) of a coverage map (T, H, W)."""
    t, h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    area = alpha.sum(axis=(1, 2))
    cx = (alpha * xs).sum(axis=(1, 2)) / area
    cy = (alpha * ys).sum(axis=(1, 2)) / area
    dx, dy = xs[None] - cx[:, None, None], ys[None] - cy[:, None, None]
    mu20, mu02, mu11 = ((alpha * v).sum(axis=(1, 2)) / area for v in (dx * dx, dy * dy, dx * dy))
    return cx, cy, area, 0.5 * np.arctan2(2 * mu11, mu20 - mu02)


@pytest.mark.parametrize("label_index", range(len(CLASS_NAMES)))
def test_each_class_shows_its_motion(label_index):
    p = sample_clip_params(np.random.default_rng(7), label_index, short_side_range=(80, 80), fps_range=(20, 20),
                           duration_range=(0.25, 0.25))  # short: no wrap-around
    p = dataclasses.replace(p, shape="ellipse", aspect=0.5, center=(0.5, 0.5), angle=0.3, log_size_phase=0.3,
                            speed=1.0)
    _, alpha = render_clip(p, noise=False, return_alpha=True)
    cx, cy, area, angle = _track(alpha)
    moved_x, moved_y = cx[-1] - cx[0], cy[-1] - cy[0]
    turned = (angle[-1] - angle[0] + math.pi / 2) % math.pi - math.pi / 2
    grew = area[-1] / area[0]
    expected = {  # (dx sign, dy sign, rotation sign, growth sign); y grows downwards, angles turn clockwise on screen
        "moving left": (-1, 0, 0, 0), "moving right": (1, 0, 0, 0), "moving up": (0, -1, 0, 0),
        "moving down": (0, 1, 0, 0), "rotating (clockwise)": (0, 0, 1, 0),
        "rotating (counter-clockwise)": (0, 0, -1, 0), "growing": (0, 0, 0, 1), "shrinking": (0, 0, 0, -1),
    }[CLASS_NAMES[label_index]]
    observed = (np.sign(round(moved_x / 3)), np.sign(round(moved_y / 3)), np.sign(round(turned / 0.2)),
                np.sign(round(math.log(grew) / 0.1)))
    assert observed == expected, (moved_x, moved_y, turned, grew)
