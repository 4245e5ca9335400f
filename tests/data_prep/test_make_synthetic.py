"""make_synthetic CLI: writes the dataset, skips a complete one, rejects bad options."""

from __future__ import annotations

import data_prep.make_synthetic as ms


def test_cli_writes_then_skips(tmp_path, capsys):
    args = [str(tmp_path / "ds"), "--num-classes", "2", "--videos-per-class", "1", "--val-videos-per-class", "1",
            "--short-side", "32,32", "--fps", "8,8", "--duration", "0.4,0.4", "--workers", "0", "--no-progress"]
    assert ms.main(args) == 0
    assert "wrote 2 train + 2 val videos" in capsys.readouterr().out
    assert len(list((tmp_path / "ds").rglob("*.mp4"))) == 4
    assert ms.main(args) == 0
    assert "skipped" in capsys.readouterr().out
    assert ms.main([*args, "--seed", "5"]) == 2
    assert "other settings" in capsys.readouterr().err
    assert ms.main([*args[:1], "--num-classes", "12", "--no-progress"]) == 2
