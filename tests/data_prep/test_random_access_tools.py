"""Prepared for random clip access: prepare_kinetics' keyframe interval and entropy coding, the encoder settings in its
report, re-encoding a folder in place (--reencode), and check_videos --keyframes."""

from __future__ import annotations

import json
import os

import pytest
from prep_helpers import decode_all, frame_index, write_raw

import data_prep.check_videos as cv
import data_prep.prepare_kinetics as pk
from gnvideo.data.decode.keyframes import encoder_settings, keyframe_layout

HEADER = "label,youtube_id,time_start,time_end,split\n"
IDS = ("AAAAAAAAAAA", "BBBBBBBBBBB")


@pytest.fixture()
def sources(tmp_path):
    """Two raw 6 s downloads (x264's default keyframe interval: one keyframe each), a CSV and the labels."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for yid in IDS:
        write_raw(raw / f"{yid}.mp4", 150)
    (tmp_path / "train.csv").write_text(HEADER + "".join(f"a,{yid},0,5,train\n" for yid in IDS))
    (tmp_path / "labels.txt").write_text("a\n")
    return raw, tmp_path


def prepare(raw, tmp_path, **kwargs):
    return pk.prepare([str(tmp_path / "train.csv")], str(raw), str(tmp_path / "out"), short_side=48, workers=1,
                      progress=False, labels=str(tmp_path / "labels.txt"), **kwargs)


def test_prepared_clips_have_keyframes_a_span_apart_and_the_report_has_every_clips_settings(sources):
    raw, tmp_path = sources
    assert keyframe_layout(raw / f"{IDS[0]}.mp4").keyframes == (0,)
    report = prepare(raw, tmp_path)
    clips = [f"train/a/{yid}_000000_000005.mp4" for yid in IDS]
    for relpath in clips:
        path = tmp_path / "out" / relpath
        layout = keyframe_layout(path)
        assert layout.frame_count == 125 and len(layout.keyframes) >= 2 and layout.max_interval <= pk.DEFAULT_KEYINT
        assert encoder_settings(path)["keyint"] == str(pk.DEFAULT_KEYINT)
    assert report["encoder"] == {"codec": "libx264", "crf": 23, "preset": "veryfast",
                                 "x264_params": {"keyint": pk.DEFAULT_KEYINT, "cabac": 0}}
    assert sorted(report["clip_encoders"]) == clips and [e["clips"] for e in report["encoders"]] == [2]
    settings = report["encoders"][0]["settings"]
    assert settings["keyint"] == str(pk.DEFAULT_KEYINT) and settings["cabac"] == "0" and "crf" in settings

    (tmp_path / "out" / clips[1]).unlink()  # resume with other settings: the kept clip keeps its record
    again = prepare(raw, tmp_path, keyint=16, cabac=True)
    assert again["newly_encoded"] == 1 and again["skipped_existing"] == 1
    by_clip = {r: again["encoders"][i]["settings"] for r, i in again["clip_encoders"].items()}
    assert by_clip[clips[0]]["keyint"] == str(pk.DEFAULT_KEYINT) and by_clip[clips[0]]["cabac"] == "0"
    assert by_clip[clips[1]]["keyint"] == "16" and by_clip[clips[1]]["cabac"] == "1"
    assert keyframe_layout(tmp_path / "out" / clips[1]).max_interval <= 16


def test_keyint_option_of_the_command(sources):
    raw, tmp_path = sources
    out = tmp_path / "out"
    assert pk.main(["--csv", str(tmp_path / "train.csv"), "--videos", str(raw), "--out", str(out), "--keyint", "0",
                    "--cabac", "--short-side", "48", "--workers", "1", "--no-progress",
                    "--labels", str(tmp_path / "labels.txt")]) == 0
    clip = out / "train" / "a" / f"{IDS[0]}_000000_000005.mp4"
    assert encoder_settings(clip)["keyint"] == "250" and keyframe_layout(clip).max_interval > pk.DEFAULT_KEYINT
    with pytest.raises(SystemExit):
        pk.main(["--csv", str(tmp_path / "train.csv"), "--videos", str(raw), "--out", str(out), "--keyint", "-1"])


def test_reencode_in_place_keeps_names_frames_and_size_and_resumes(tmp_path, capsys):
    root = tmp_path / "data"
    for folder in ("train/x", "val"):
        (root / folder).mkdir(parents=True)
    a = write_raw(root / "train" / "x" / "a_000000_000006.mp4", 150)  # one keyframe: x264's default interval
    b = write_raw(root / "val" / "b_000000_000004.mkv", 90, width=96, height=128, fps=30)
    broken = root / "train" / "x" / "c_000000_000002.mp4"
    broken.write_bytes(os.urandom(3000))
    (root / "val" / "d_000000_000002.webm").write_bytes(b"a webm file")  # no h264 in WebM: listed, kept
    junk = broken.read_bytes()
    (root / "prepare_report.json").write_text(json.dumps({"clips": 2, "encoders": [], "clip_encoders": {}}))
    names = sorted(p.relative_to(root) for p in root.rglob("*.m*"))

    report = pk.reencode(str(root), keyint=32, workers=2, progress=False)
    assert report["videos"] == 4 and report["reencoded"] == 2 and report["already_fine"] == 0
    assert [x["path"] for x in report["other_containers"]] == ["val/d_000000_000002.webm"]
    assert [x["path"] for x in report["broken"]] == ["train/x/c_000000_000002.mp4"]
    assert broken.read_bytes() == junk  # a broken file is reported and left as it was
    assert sorted(p.relative_to(root) for p in root.rglob("*.m*")) == names and not list(root.rglob(".*partial"))
    frames, fps = decode_all(a)
    assert fps == 25 and frames.shape[1:3] == (120, 160) and [frame_index(f) for f in frames] == list(range(150))
    frames, fps = decode_all(b)
    assert fps == 30 and frames.shape[1:3] == (128, 96) and [frame_index(f) for f in frames] == list(range(90))
    for path in (a, b):
        assert keyframe_layout(path).max_interval <= 32 and encoder_settings(path)["cabac"] == "0"
    on_disk = json.loads((root / "reencode_report.json").read_text())
    assert on_disk == report and sorted(report["clip_encoders"]) == ["train/x/a_000000_000006.mp4",
                                                                     "val/b_000000_000004.mkv"]
    prepared = json.loads((root / "prepare_report.json").read_text())  # its records follow the new files
    assert prepared["clips"] == 2 and sorted(prepared["clip_encoders"]) == sorted(report["clip_encoders"])

    stamps = {p: p.stat().st_mtime_ns for p in (a, b)}
    assert pk.main(["--reencode", str(root), "--keyint", "32", "--workers", "1", "--no-progress"]) == 0
    assert "0 re-encoded, 2 already fine, 1 broken (left as they are), 1 in other containers" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (a, b)} == stamps  # a rerun skips the files done
    assert pk.reencode(str(root), keyint=16, workers=1, progress=False)["reencoded"] == 2  # a smaller interval
    with pytest.raises(SystemExit):
        pk.main(["--reencode", str(root), "--out", str(tmp_path / "o")])
    assert pk.main(["--reencode", str(tmp_path / "absent"), "--no-progress"]) == 2


def test_transcode_whole_file_at_its_own_size(tmp_path):
    src = write_raw(tmp_path / "src.mp4", 60, 96, 64)
    n = pk.transcode(src, tmp_path / "copy.mp4", 0.0, None, short_side=None, x264_params={"keyint": 8})
    frames, _ = decode_all(tmp_path / "copy.mp4")
    assert n == 60 and frames.shape[1:3] == (64, 96) and [frame_index(f) for f in frames] == list(range(60))
    assert keyframe_layout(tmp_path / "copy.mp4").max_interval <= 8


@pytest.mark.parametrize("workers", [0, 2])
def test_check_videos_keyframe_report(tmp_path, capsys, workers):
    root = tmp_path / "d"
    (root / "train").mkdir(parents=True)
    write_raw(root / "train" / "long_000000_000006.mp4", 150)  # one keyframe
    write_raw(root / "train" / "short_000000_000006.mp4", 150, bframes=2)  # a keyframe every 15 frames
    (root / "train" / "bad_000000_000006.mp4").write_bytes(b"not a video")
    out_json = tmp_path / "k.json"
    assert cv.main([str(root), "--keyframes", "--num-frames", "8", "--sampling-rate", "2", "--workers", str(workers),
                    "--json", str(out_json), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "keyframes of 3 videos (1 unreadable), clip 8x2 (span 15 frames)" in text
    assert "bad_000000_000006.mp4: cannot open" in text
    assert f"gnvideo-prepare-kinetics --reencode {root}" in text  # median interval (82.5) > 2 spans
    data = json.loads(out_json.read_text())
    summary, videos = data["summary"], {os.path.basename(v["path"]): v for v in data["videos"]}
    assert summary["max_interval"] == {"median": 82.5, "p90": 150, "max": 150, "histogram": {
        "1-16": 1, "17-32": 0, "33-64": 0, "65-128": 0, "129-256": 1, ">256": 0}}
    assert summary["slow"] and summary["unreadable"] == 1
    assert videos["long_000000_000006.mp4"]["frames_decoded"] == pytest.approx(15 + 135 / 2, abs=1)
    assert videos["short_000000_000006.mp4"]["frames_decoded"] < 30
    assert summary["frames_decoded_per_clip"] == pytest.approx(
        (videos["long_000000_000006.mp4"]["frames_decoded"] + videos["short_000000_000006.mp4"]["frames_decoded"]) / 2)
    assert sorted(n.split()[-2] for n in summary["encoders"]) == ["keyint=15", "keyint=250"]
    assert not (root / "broken_videos.txt").exists()  # a keyframe report writes no list


def test_keyframe_report_survives_a_crashing_and_a_hanging_read(tmp_path, monkeypatch):
    import signal
    import time

    import data_prep.keyframe_report as kr

    paths = [str(write_raw(tmp_path / f"v{i}.mp4", 30)) for i in range(4)]
    real = kr._facts_job

    def faulty(job, progress):
        if job[0].endswith("v1.mp4"):
            os.kill(os.getpid(), signal.SIGSEGV)  # a native crash inside the header read, as the pool sees it
        if job[0].endswith("v2.mp4"):
            time.sleep(3600)  # a read that never returns
        return real(job, progress)

    monkeypatch.setattr(kr, "_facts_job", faulty)  # forked workers inherit it
    facts = kr.keyframe_facts(paths, 8, 2, workers=2, timeout=3)
    assert [f["path"] for f in facts] == paths  # input order, every file once
    assert facts[1]["problem"] == "decoder crashed: signal 11 (SIGSEGV)"
    assert facts[2]["problem"] == "decoder hung: no frames after 3 s"
    assert "problem" not in facts[0] and "problem" not in facts[3] and facts[3]["max_interval"] >= 1
