"""One rule for time_start/time_end and labels (issue 10, finding 7): the dataset and prepare_kinetics agree."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gnvideo.data import read_annotations
from gnvideo.data.layout import is_video_file, parse_time_span

HEADER = "label,youtube_id,time_start,time_end,split\n"


def _prepare_kinetics():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data_prep"))
    from prep_helpers import load_script

    return load_script("prepare_kinetics")


@pytest.mark.parametrize("start,end,message", [
    ("0.5", "10", "time_start must be a whole number of seconds"),
    ("-1", "10", "time_start must be >= 0"),
    ("7", "3", "need time_start < time_end"),
    ("4", "4", "need time_start < time_end"),
    ("x", "4", "time_start is not a number"),
    ("1", "nan", "time_end must be a whole number"),
])
def test_bad_times_rejected_by_dataset_and_prepare_alike(tmp_path, start, end, message):
    with pytest.raises(ValueError, match=message):
        parse_time_span(start, end)
    csv = tmp_path / "train.csv"
    csv.write_text(HEADER + f"a,ok,0,10,train\na,bad,{start},{end},train\n")
    with pytest.raises(ValueError, match=rf"train\.csv:3: malformed row.*{message}"):
        read_annotations(csv, tmp_path, "train", ["a"])
    with pytest.raises(ValueError, match=rf"train\.csv:3: malformed row.*{message}"):
        _prepare_kinetics().read_official_csv(csv)


def test_good_times_and_labels(tmp_path):
    assert parse_time_span("3", "13.0") == (3, 13)
    csv = tmp_path / "train.csv"
    csv.write_text(HEADER + "a,x,3,13.0,train\nb,y,0,10,train\n")
    assert [e.label for e in read_annotations(csv, tmp_path, "train", ["b", "a"])] == [1, 0]
    with pytest.raises(ValueError, match=r"train\.csv:3: unknown label 'b'"):
        read_annotations(csv, tmp_path, "train", ["a"])
    with pytest.raises(ValueError, match=r"train\.csv:3: .*unknown label 'b'"):
        _prepare_kinetics().read_official_csv(csv, label_names=["a"])


def test_video_file_names():
    assert is_video_file("a.MP4") and is_video_file("x/b.mkv") and is_video_file("c.avi")
    assert not is_video_file(".a.mp4.partial") and not is_video_file(".hidden.mp4") and not is_video_file("n.txt")
