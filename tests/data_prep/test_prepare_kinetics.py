"""prepare_kinetics: trimming, resizing, resuming, missing/broken sources, annotation files, malformed CSVs."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from prep_helpers import decode_all, frame_index, write_raw

import data_prep.check_videos as cv
import data_prep.prepare_kinetics as pk

HEADER = "label,youtube_id,time_start,time_end,split\n"
FULL, TRIMMED, BROKEN, MISSING = "AAAAAAAAA-_", "B_BBBBBBBBB", "CCCCCCCCCCC", "DDDDDDDDDDD"


@pytest.fixture()
def kinetics(tmp_path):
    """Raw downloads (a 6 s full video, a pre-trimmed 2 s clip, a garbage file) and official-style CSVs."""
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    write_raw(raw / f"{FULL}.mp4", 150)  # 25 fps, 6 s, 160x120
    write_raw(raw / "sub" / f"{TRIMMED}_000002_000004.mkv", 50, width=96, height=128)  # portrait, already cut
    (raw / f"{BROKEN}.mp4").write_bytes(os.urandom(3000))
    (raw / f"{FULL}.mp4.part").write_bytes(b"partial download, ignored")
    csvs = tmp_path / "csv"
    csvs.mkdir()
    (csvs / "train.csv").write_text(
        HEADER + f'"abc def",{FULL},1,4,train\n"x (y)",{TRIMMED},2,4,train\n"x (y)",{BROKEN},0,10,train\n')
    (csvs / "validate.csv").write_text(HEADER + f'"abc def",{MISSING},5,15,val\n"x (y)",{FULL},0,2,val\n')
    (csvs / "labels.txt").write_text("abc def\nx (y)\n")
    return raw, [str(csvs / "train.csv"), str(csvs / "validate.csv")], tmp_path / "out"


def run(pk, raw, csvs, out, **kwargs):
    labels = str(Path(csvs[0]).parent / "labels.txt")
    return pk.prepare(csvs, str(raw), str(out), short_side=64, workers=2, progress=False, labels=labels, **kwargs)


def test_prepare_trims_resizes_and_reports(kinetics):
    raw, csvs, out = kinetics
    report = run(pk, raw, csvs, out)
    clip = out / "train" / "abc def" / f"{FULL}_000001_000004.mp4"
    frames, fps = decode_all(clip)
    assert fps == 25 and len(frames) == 75  # (end - start) * fps
    assert [frame_index(f) for f in frames] == list(range(25, 100))  # exactly the source frames of [1 s, 4 s)
    assert frames.shape[1:3] == (64, 86)  # short side 64, 4:3 kept (even width)
    short, _ = decode_all(out / "val" / "x (y)" / f"{FULL}_000000_000002.mp4")
    assert len(short) == 50 and frame_index(short[0]) == 0
    trimmed, _ = decode_all(out / "train" / "x (y)" / f"{TRIMMED}_000002_000004.mp4")
    assert len(trimmed) == 50 and frame_index(trimmed[0]) == 0  # the whole pre-cut file
    assert trimmed.shape[1:3] == (86, 64)  # portrait: the width is the short side
    with av_open(clip) as c:
        assert c.streams.video[0].codec_context.name == "h264" and not c.streams.audio

    assert report["done"] == 3 and report["newly_encoded"] == 3 and report["clips"] == 5
    assert [(m["youtube_id"], m["line"]) for m in report["missing"]] == [(MISSING, 2)]
    assert report["missing"][0]["csv"].endswith("validate.csv")
    assert len(report["broken"]) == 1 and BROKEN in report["broken"][0]["source"] and report["broken"][0]["reason"]
    assert json.loads((out / "prepare_report.json").read_text()) == report

    with open(out / "annotations" / "train.csv", newline="") as f:
        train = list(csv.reader(f))
    assert train == [["label", "youtube_id", "time_start", "time_end", "split"],
                     ["abc def", FULL, "1", "4", "train"], ["x (y)", TRIMMED, "2", "4", "train"]]
    with open(out / "annotations" / "val.csv", newline="") as f:
        assert list(csv.reader(f))[1:] == [["x (y)", FULL, "0", "2", "val"]]
    assert not list(out.rglob(".*partial"))


def av_open(path):
    import av

    return av.open(str(path))


def test_prepare_is_resumable(kinetics):
    raw, csvs, out = kinetics
    run(pk, raw, csvs, out)
    outputs = sorted(out.rglob("*.mp4"))
    assert len(outputs) == 3
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    again = run(pk, raw, csvs, out)
    assert again["newly_encoded"] == 0 and again["skipped_existing"] == 3 and again["done"] == 3
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    outputs[0].unlink()
    third = run(pk, raw, csvs, out)
    assert third["newly_encoded"] == 1 and third["skipped_existing"] == 2 and outputs[0].is_file()


def test_short_side_option_and_cli(kinetics):
    raw, csvs, out = kinetics
    rc = pk.main(["--csv", csvs[0], "--videos", str(raw), "--out", str(out), "--short-side", "96", "--workers", "1",
                  "--no-progress", "--labels", str(Path(csvs[0]).parent / "labels.txt")])
    assert rc == 0
    frames, _ = decode_all(out / "train" / "abc def" / f"{FULL}_000001_000004.mp4")
    assert frames.shape[1:3] == (96, 128)
    assert not (out / "annotations" / "val.csv").exists()


def test_malformed_row_names_file_and_line(tmp_path):
    bad = tmp_path / "train.csv"
    bad.write_text(HEADER + f"ok,{FULL},1,4,train\nbroken,{FULL},four,9,train\n")
    with pytest.raises(ValueError, match=r"train\.csv:3"):
        pk.read_official_csv(bad)
    bad.write_text("label,youtube_id,time_start\nx,y,1\n")
    with pytest.raises(ValueError, match=r"train\.csv:1: missing column"):
        pk.read_official_csv(bad)
    bad.write_text(HEADER + f"ok,{FULL},5,4,train\n")
    with pytest.raises(ValueError, match=r"train\.csv:2"):
        pk.read_official_csv(bad)
    assert pk.main(["--csv", str(bad), "--videos", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(FileNotFoundError, match="nothere.csv"):
        pk.read_official_csv(tmp_path / "nothere.csv")


def test_transcode_past_the_end(tmp_path):
    src = write_raw(tmp_path / "src.mp4", 150)  # 6 s
    n = pk.transcode(src, tmp_path / "tail.mp4", 5.0, 10.0, short_side=48)
    frames, _ = decode_all(tmp_path / "tail.mp4")
    assert n == len(frames) == 25 and frame_index(frames[-1]) == 149  # the clip stops where the source ends
    with pytest.raises(ValueError, match="no frames"):
        pk.transcode(src, tmp_path / "none.mp4", 8.0, 10.0)
    assert not (tmp_path / "none.mp4").exists()


@pytest.mark.parametrize("name,fps,frames,codec,bframes", [
    ("src.mkv", 30, 300, "libx264", 3),  # millisecond timestamps: 33/34 ms steps
    ("src.avi", 25, 100, "mpeg4", 2),  # B-frames in AVI
    ("h264.avi", 25, 100, "libx264", 3),  # packet times in decode order
    ("src.mp4", 30, 300, "libx264", 3),
])
def test_every_source_frame_once_at_the_source_rate(tmp_path, name, fps, frames, codec, bframes):
    src = write_raw(tmp_path / name, frames, 96, 64, fps=fps, codec=codec, bframes=bframes)
    pk.transcode(src, tmp_path / "whole.mp4", 0.0, frames / fps, short_side=48)
    out, rate = decode_all(tmp_path / "whole.mp4")
    assert rate == fps and [frame_index(f) for f in out] == [i % 256 for i in range(frames)]  # 8-bit numbers
    pk.transcode(src, tmp_path / "cut.mp4", 1.0, 3.0, short_side=48)  # a cut from a full video (seeks)
    out, _ = decode_all(tmp_path / "cut.mp4")
    assert [frame_index(f) for f in out] == list(range(fps, 3 * fps))


@pytest.mark.parametrize("ext,rotation", [("mov", 90), ("mp4", 270), ("mov", 180)])
def test_rotated_source_comes_out_upright(tmp_path, ext, rotation):
    """The output is the upright picture (as the reader shows the source), without rotation metadata."""
    import numpy as np

    from gnvideo.data import open_video

    src = write_raw(tmp_path / f"rot.{ext}", 50, 160, 120, rotation=rotation)
    n = pk.transcode(src, tmp_path / "up.mp4", 0.0, 2.0, short_side=60)
    out, _ = decode_all(tmp_path / "up.mp4")
    upright = open_video(src, backend="pyav").frames(range(50)).numpy()
    portrait = rotation in (90, 270)
    assert n == 50 and out.shape[1:3] == ((80, 60) if portrait else (60, 80))
    assert upright.shape[1:3] == ((160, 120) if portrait else (120, 160))
    with av_open(tmp_path / "up.mp4") as c:
        first = next(iter(c.decode(video=0)))
        assert not first.rotation
    back = [np.rot90(f, -(rotation // 90)) for f in out]  # undo the turn: the drawn frame numbers read again
    assert [frame_index(f) for f in back] == list(range(50))
    small = upright[:, ::2, ::2].astype(float)
    assert np.abs(out.astype(float) - small).mean() < 12


def test_source_broken_midway_gets_the_check_videos_verdict(tmp_path):
    import numpy as np

    raw = tmp_path / "raw"
    raw.mkdir()
    good = write_raw(tmp_path / "good.mp4", 50, 160, 120, bframes=2)
    data = bytearray(good.read_bytes())
    a, b = int(len(data) * 0.55), int(len(data) * 0.62)
    data[a:b] = np.random.default_rng(0).integers(0, 256, b - a, dtype=np.uint8).tobytes()
    (raw / "EEEEEEEEEEE_000000_000002.mp4").write_bytes(bytes(data))
    cut = write_raw(tmp_path / "cut.mp4", 50, 160, 120, faststart=True)
    (raw / "FFFFFFFFFFF_000000_000002.mp4").write_bytes(cut.read_bytes()[: cut.stat().st_size * 6 // 10])
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(HEADER + "a,EEEEEEEEEEE,0,2,train\na,FFFFFFFFFFF,0,2,train\n")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\n")
    report = pk.prepare([str(csv_file)], str(raw), str(tmp_path / "out"), short_side=48, workers=1, progress=False,
                        labels=str(labels))
    reasons = {os.path.basename(b["source"]): b["reason"] for b in report["broken"]}
    assert len(reasons) == 2 and report["done"] == 0
    for name, reason in reasons.items():
        assert reason == cv.check_video(str(raw / name)), name  # one verdict, whichever tool
    assert reasons["EEEEEEEEEEE_000000_000002.mp4"].startswith("decode error at frame")
    assert reasons["FFFFFFFFFFF_000000_000002.mp4"].startswith("truncated:")


def test_unknown_label_stops_before_encoding(kinetics, capsys):
    raw, csvs, out = kinetics
    assert pk.main(["--csv", *csvs, "--videos", str(raw), "--out", str(out), "--no-progress"]) == 2  # K400 names
    assert "train.csv:2: unknown label 'abc def'" in capsys.readouterr().err and "unknown label 'abc def'" in str(
        pytest.raises(ValueError, pk.read_official_csv, csvs[0], None, ["x (y)"]).value)
    assert not list(out.rglob("*.mp4")) if out.exists() else True
    run(pk, raw, csvs, out)
    assert (out / "labels.txt").read_text() == "abc def\nx (y)\n"  # where the dataset looks for class names
