"""metrics.csv of a resumed run: every row on disk when it is logged, the rows a checkpoint covers kept, the killed
attempt's later rows replaced from the first one the resumed attempt logs again, the header rewritten atomically."""

from __future__ import annotations

import csv

from gnvideo.training.run_logs import AppendingCSVLogger


def _rows(folder) -> list[tuple]:
    with open(folder / "metrics.csv", newline="") as f:
        return [(r["step"], r.get("lr") or None, r.get("loss") or None) for r in csv.DictReader(f)]


def _killed_attempt(tmp_path) -> AppendingCSVLogger:
    """Steps 0-3, each an ``lr`` row then a ``loss`` row; nothing flushed by hand (a SIGKILL would come now)."""
    logger = AppendingCSVLogger(save_dir=str(tmp_path), name="run", version=0)
    for step in range(4):
        logger.log_metrics({"lr": 0.1 * step}, step)
        logger.log_metrics({"loss": 2.0 - step / 10}, step)
    return logger


def _resumed(tmp_path, keep_rows, first_step: int) -> AppendingCSVLogger:
    logger = AppendingCSVLogger(save_dir=str(tmp_path), name="run", version=0)
    if keep_rows is not None:
        logger.keep_rows(keep_rows)
    logger.log_metrics({"lr": 0.1 * first_step}, first_step)
    return logger


def test_rows_are_on_disk_when_logged(tmp_path):
    logger = _killed_attempt(tmp_path)
    folder = tmp_path / "run" / "version_0"
    assert len(_rows(folder)) == 8 and logger.rows_on_disk == 8
    assert _rows(folder)[-1] == ("3", None, "1.7")


def test_resume_replaces_the_rows_logged_again(tmp_path):
    """The checkpoint of step 2 covers 5 rows (steps 0, 1 and step 2's lr; step 2's loss comes right after it): the
    resumed attempt starts with step 3's lr, which replaces the killed attempt's step-3 rows."""
    _killed_attempt(tmp_path)
    folder = tmp_path / "run" / "version_0"
    logger = _resumed(tmp_path, keep_rows=5, first_step=3)
    assert _rows(folder) == [("0", "0.0", None), ("0", None, "2.0"), ("1", "0.1", None), ("1", None, "1.9"),
                             ("2", "0.2", None), ("2", None, "1.8"), ("3", "0.30000000000000004", None)]
    assert logger.rows_on_disk == 7
    assert not list(folder.glob("*.partial"))


def test_rows_not_logged_again_are_kept(tmp_path):
    _killed_attempt(tmp_path)
    _resumed(tmp_path, keep_rows=5, first_step=4)  # the killed attempt got no further than step 3: nothing redone
    assert len(_rows(tmp_path / "run" / "version_0")) == 9
    _resumed(tmp_path, keep_rows=None, first_step=0)  # no checkpoint record (older checkpoints): only appends
    assert len(_rows(tmp_path / "run" / "version_0")) == 10


def test_starting_over_in_the_folder_replaces_all_rows(tmp_path):
    """A requeued job whose first attempt was killed before any checkpoint starts over in the same folder."""
    _killed_attempt(tmp_path)
    _resumed(tmp_path, keep_rows=0, first_step=0)
    assert _rows(tmp_path / "run" / "version_0") == [("0", "0.0", None)]


def test_a_new_column_rewrites_the_header_and_keeps_the_rows(tmp_path):
    logger = _killed_attempt(tmp_path)
    logger.log_metrics({"val_top1": 0.5}, 3)
    folder = tmp_path / "run" / "version_0"
    with open(folder / "metrics.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == ["loss", "lr", "step", "val_top1"] and len(rows) == 9
    assert rows[-1]["val_top1"] == "0.5" and not list(folder.glob("*.partial"))
