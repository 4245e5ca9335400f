"""A non-local run end to end on the tiny synthetic dataset: fit from a plain checkpoint (one line about the fresh
blocks), test, the recorded setting, and a report that puts it in a row of its own."""

from __future__ import annotations

import json
from pathlib import Path

from gnvideo.cli import main
from gnvideo.report import load_results, markdown_table

from .conftest import cli_args

SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.num_sanity_val_steps", "0",
         "--trainer.check_val_every_n_epoch", "1"]


def _fit_and_test(root: Path, runs: Path, *extra: str) -> dict:
    assert main(["fit", *cli_args(root, runs, *SHORT, *extra)]) == 0
    last = next(runs.rglob("last.ckpt"))
    assert main(["test", *cli_args(root, runs, *extra), "--ckpt_path", str(last)]) == 0
    (result,) = list(runs.rglob("results.json"))
    return json.loads(result.read_text())


def test_nl_run_from_a_plain_checkpoint_and_its_report_row(synthetic_root, tmp_path, capsys):
    plain = _fit_and_test(synthetic_root, tmp_path / "plain")
    assert plain["setting"]["nonlocal_blocks"] == 0 and plain["setting"]["nonlocal_instantiation"] is None
    ckpt = next((tmp_path / "plain").rglob("last.ckpt"))
    capsys.readouterr()
    nl = _fit_and_test(synthetic_root, tmp_path / "nl", "--model.backbone", "tiny_r3d_nl",
                       "--model.init_from", str(ckpt))
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "non-local" in line]
    assert lines == ["  2 non-local blocks not in the checkpoint start at their initialization (the identity): "
                     "layer2.nonlocal0, layer3.nonlocal0"], out
    assert "left as initialized 0" in out
    s = nl["setting"]
    assert (s["backbone"], s["nonlocal_blocks"], s["nonlocal_instantiation"]) == ("tiny_r3d_nl", 2, "embedded_gaussian")
    assert s["init_from"] == str(ckpt)

    table = markdown_table(load_results([tmp_path]))
    rows = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("|")]
    assert rows == ["BN (ours)", "BN + NL2 (ours)"]
