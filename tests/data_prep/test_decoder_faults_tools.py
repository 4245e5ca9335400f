"""check-videos and prepare-kinetics end, and report a file whose decoder crashes (SIGSEGV in FFmpeg's open) or hangs
(its open never returns): the fault is injected at libc's open() by an LD_PRELOAD shim, in the real commands."""

from __future__ import annotations

import json
import time

from decoder_faults import fault_env, opens, run
from prep_helpers import write_raw

HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_check_videos_ends_and_lists_a_crashing_and_a_hanging_file(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    paths = [write_raw(root / f"v{i}.mp4", 8, 32, 32) for i in range(5)]
    env = fault_env(crash=[paths[1]], hang=[paths[3]], log=tmp_path / "opens.txt")
    t0 = time.monotonic()
    proc = run(["-m", "data_prep.check_videos", str(root), "--workers", "2", "--timeout", "3", "--no-progress"], env)
    assert time.monotonic() - t0 < 120
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    assert f"broken: {paths[1]}: decoder crashed: signal 11 (SIGSEGV)" in lines
    assert f"broken: {paths[3]}: decoder hung: no frames after 3 s" in lines
    assert sum(line.startswith("broken:") for line in lines) == 2 and "checked 5 videos: 2 broken" in lines[-1]
    listed = dict(line.split("\t") for line in (root / "broken_videos.txt").read_text().splitlines())
    assert listed == {str(paths[1]): "decoder crashed: signal 11 (SIGSEGV)",
                      str(paths[3]): "decoder hung: no frames after 3 s"}
    assert opens(tmp_path / "opens.txt", "v1.mp4") == opens(tmp_path / "opens.txt", "v3.mp4") == 1


def test_prepare_kinetics_ends_and_reports_a_crashing_and_a_hanging_source(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    ids = ["AAAAAAAAAAA", "BBBBBBBBBBB", "CCCCCCCCCCC", "DDDDDDDDDDD"]
    for youtube_id in ids:
        write_raw(raw / f"{youtube_id}.mp4", 75, 64, 48)
    csv_file = tmp_path / "train.csv"
    csv_file.write_text(HEADER + "".join(f"a,{youtube_id},0,2,train\n" for youtube_id in ids))
    (tmp_path / "labels.txt").write_text("a\n")
    env = fault_env(crash=[raw / f"{ids[1]}.mp4"], hang=[raw / f"{ids[2]}.mp4"])
    out = tmp_path / "out"
    proc = run(["-m", "data_prep.prepare_kinetics", "--csv", str(csv_file), "--videos", str(raw), "--out", str(out),
                "--short-side", "32", "--workers", "2", "--timeout", "3", "--labels", str(tmp_path / "labels.txt"),
                "--no-progress"], env)
    assert proc.returncode == 0, proc.stderr
    assert "2/4 clips ready" in proc.stdout and "2 broken" in proc.stdout
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {b["source"]: b["reason"] for b in report["broken"]}
    assert reasons == {str(raw / f"{ids[1]}.mp4"): "decoder crashed: signal 11 (SIGSEGV)",
                       str(raw / f"{ids[2]}.mp4"): "decoder hung: no frames after 3 s"}
    # no temp file of the killed workers is left behind
    assert sorted(p.name for p in (out / "train" / "a").iterdir()) == [f"{i}_000000_000002.mp4" for i in ids[::3]]
