"""One rule for time_start/time_end and labels (issue 10, finding 7): the dataset and prepare_kinetics agree."""

from __future__ import annotations

import pytest

from data_prep.prepare_kinetics import read_official_csv
from gnvideo.data import read_annotations
from gnvideo.data.layout import is_video_file, parse_time_span

HEADER = "label,youtube_id,time_start,time_end,split\n"


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
        read_official_csv(csv)


def test_good_times_and_labels(tmp_path):
    assert parse_time_span("3", "13.0") == (3, 13)
    csv = tmp_path / "train.csv"
    csv.write_text(HEADER + "a,x,3,13.0,train\nb,y,0,10,train\n")
    assert [e.label for e in read_annotations(csv, tmp_path, "train", ["b", "a"])] == [1, 0]
    with pytest.raises(ValueError, match=r"train\.csv:3: unknown label 'b'"):
        read_annotations(csv, tmp_path, "train", ["a"])
    with pytest.raises(ValueError, match=r"train\.csv:3: .*unknown label 'b'"):
        read_official_csv(csv, label_names=["a"])


def test_video_file_names():
    assert is_video_file("a.MP4") and is_video_file("x/b.mkv") and is_video_file("c.avi")
    assert not is_video_file(".a.mp4.partial") and not is_video_file(".hidden.mp4") and not is_video_file("n.txt")


def test_annotation_csv_round_trip_keeps_awkward_labels(tmp_path):
    from gnvideo.data.layout import ANNOTATION_COLUMNS, read_annotation_csv, write_annotation_csv

    rows = [("rotating (counter-clockwise)", "a-b_c", 0, 10, "train"), ('say "hi", wave', "xyz", 3, 7, "val")]
    path = tmp_path / "sub" / "train.csv"
    write_annotation_csv(path, rows)
    assert path.read_text().splitlines()[0] == ",".join(ANNOTATION_COLUMNS)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # the temp file was renamed
    read = read_annotation_csv(path, label_names=[r[0] for r in rows])
    assert [tuple(r[:5]) for r in read] == rows and [r.line for r in read] == [2, 3]
    assert read[0].stem == "a-b_c_000000_000010"


@pytest.mark.parametrize("body,message", [
    ("a,x,1\n", r"rows\.csv:2: malformed row, 3 fields where the header has 5"),
    ("a,,1,2,train\n", r"rows\.csv:2: malformed row, empty label or youtube_id"),
    ("a,x/y,1,2,train\n", r"rows\.csv:2: malformed row, label and youtube_id must not contain '/'"),
    ("\nb,x,1,2,train\n", r"rows\.csv:3: unknown label 'b'"),
])
def test_annotation_csv_errors_name_file_and_line(tmp_path, body, message):
    from gnvideo.data.layout import read_annotation_csv

    path = tmp_path / "rows.csv"
    path.write_text(HEADER + body)
    with pytest.raises(ValueError, match=message) as info:
        read_annotation_csv(path, label_names=["a"])
    assert "\n" not in str(info.value)
    path.write_text("label,youtube_id\n")
    with pytest.raises(ValueError, match=r"rows\.csv:1: missing column\(s\) \['time_start', 'time_end'\]"):
        read_annotation_csv(path)


def test_video_files_are_listed_sorted_without_hidden_ones(tmp_path):
    from gnvideo.data.layout import index_video_files, list_video_files

    for rel in ("b/x_000001_000002.mp4", "a/y.webm", "a/.y.mp4.partial", ".cache/z.mp4", "a/notes.txt", "c/x.mkv",
                "a/x_000001_000002.avi"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    expected = ("a/x_000001_000002.avi", "a/y.webm", "b/x_000001_000002.mp4", "c/x.mkv")
    assert list_video_files(tmp_path) == [str(tmp_path / r) for r in expected]
    index = index_video_files(tmp_path)
    assert index == {"x_000001_000002": str(tmp_path / "a/x_000001_000002.avi"), "y": str(tmp_path / "a/y.webm"),
                     "x": str(tmp_path / "c/x.mkv")}
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_video_files(tmp_path / "nowhere")


def test_exclude_list_written_then_read_and_applied(tmp_path):
    from gnvideo.data.annotations import VideoEntry, apply_exclude
    from gnvideo.data.layout import read_exclude_list, write_exclude_list

    broken = [(str(tmp_path / "a b" / "bad.mp4"), "decode error at\nframe 3"), (str(tmp_path / "cut.mkv"), "truncated")]
    listing = tmp_path / "broken_videos.txt"
    write_exclude_list(listing, broken, root=str(tmp_path), relative=True)
    assert listing.read_text() == "a b/bad.mp4\tdecode error at frame 3\ncut.mkv\ttruncated\n"
    keys = read_exclude_list(listing)
    entries = [VideoEntry(str(tmp_path / "elsewhere" / "bad.mp4"), 0), VideoEntry(str(tmp_path / "ok.mp4"), 1),
               VideoEntry(str(tmp_path / "cut.mkv"), 2)]
    assert apply_exclude(entries, keys) == [entries[1]]  # matched by file name, or by path
    with pytest.raises(FileNotFoundError, match="absent.txt"):
        read_exclude_list(tmp_path / "absent.txt")


def test_split_names_and_clip_file_names():
    from gnvideo.data.layout import clip_filename, split_from_file_name, split_name

    assert [split_name(s) for s in ("train", "Validate", " valid ", "test")] == ["train", "val", "val", "test"]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        split_name("dev")
    assert split_from_file_name("k400/validate.csv") == "val" and split_from_file_name("x/all.csv") is None
    assert clip_filename("abc", 3, 13) == "abc_000003_000013.mp4" and clip_filename("a", 0, 1, ".mkv").endswith(".mkv")
