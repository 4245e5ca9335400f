"""End-to-end CLI runs on the tiny synthetic dataset: fit, validate, multi-view test, predict, resume, fast_dev_run."""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from gnvideo.cli import main

from .conftest import cli_args

TRAIN = ["--trainer.max_epochs", "8", "--model.base_lr", "0.3", "--model.dropout", "0", "--model.schedule", "constant",
         "--model.warmup_fraction", "0", "--data.clips_per_device", "8", "--throughput.window_size", "4"]


def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """One short real training run (8 epochs x 3 steps of 8 clips), reused by the tests below."""
    runs = tmp_path_factory.mktemp("runs")
    assert main(["fit", *cli_args(synthetic_root, runs, *TRAIN)]) == 0
    run = runs / "tiny_r3d_bn" / "version_0"
    return run


def test_fit_writes_run_folder_and_loss_falls(trained):
    run = trained
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert list(run.glob("events.out.tfevents.*"))
    rows = _metrics(run)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 24
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6, losses
    assert any(r.get("val/top1") for r in rows)
    speeds = [float(r["train/device/samples_per_sec"]) for r in rows if r.get("train/device/samples_per_sec")]
    assert len(speeds) == 24 - 3 and min(speeds) > 0  # Lightning's ThroughputMonitor, from the 4th step on
    lrs = [float(r["train/lr/decay"]) for r in rows if r.get("train/lr/decay")]
    assert lrs == [pytest.approx(0.3 * 8 / 64)] * 24  # base_lr x (8 clips x 1 device x 1 accumulation) / 64
    saved = (run / "config.yaml").read_text()
    assert "max_epochs: 8" in saved and "clips_per_device: 8" in saved


def test_checkpoints_hold_only_tensors_and_plain_types(trained):
    """gnvideo reads every checkpoint with weights_only=True, its own included: they must stay loadable that way,
    with the few globals every torch since 1.13 allows there (no numpy, no custom class, no add_safe_globals)."""
    import pickletools
    import zipfile

    from gnvideo.models.checkpoint_io import read_checkpoint
    from gnvideo.training.runner import check_run_checkpoint

    files = [trained / "checkpoints" / "last.ckpt", *(trained / "checkpoints").glob("best-*.ckpt")]
    assert len(files) == 2
    for path in files:
        with zipfile.ZipFile(path) as z:
            pkl = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        named = {str(arg) for op, arg, _ in pickletools.genops(pkl) if op.name in ("GLOBAL", "STACK_GLOBAL")}
        basic = {"collections OrderedDict", "torch._utils _rebuild_tensor_v2", "torch._utils _rebuild_parameter"}
        assert all(g in basic or (g.startswith("torch ") and g.endswith("Storage")) for g in named), named
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        expected = {"state_dict", "optimizer_states", "loops", "callbacks", "hyper_parameters", "gnvideo_setting"}
        assert expected <= set(ckpt)
        assert read_checkpoint(path, "ckpt_path").keys() == ckpt.keys()
        check_run_checkpoint(str(path), "fit")  # can resume


def test_validate(trained, synthetic_root, tmp_path):
    ckpt = trained / "checkpoints" / "last.ckpt"
    assert main(["validate", *cli_args(synthetic_root, tmp_path), "--ckpt_path", str(ckpt)]) == 0
    rows = _metrics(tmp_path / "tiny_r3d_bn" / "validate_0")
    assert 0.0 <= float(next(r["val/top1"] for r in rows if r.get("val/top1"))) <= 1.0


def _hand_scores(ckpt: Path, root: Path) -> dict:
    """Per-video softmax averaged over the views, computed outside Lightning, scored by plain Python."""
    from gnvideo.data import KineticsDataModule, views_of
    from gnvideo.training.module import VideoClassifier

    model = VideoClassifier.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = KineticsDataModule(str(root), clips_per_device=5, num_workers=0, num_frames=8, sampling_rate=2,
                            train_crop_size=32, val_short_side=32, val_crop_size=32, test_short_side=32,
                            test_crop_size=32, test_num_clips=2, test_num_crops=1,
                            pin_memory=False, persistent_workers=False)
    dm.setup("test")
    sums, labels, broken = defaultdict(lambda: 0.0), {}, set()
    with torch.no_grad():
        for i in range(len(dm.test_dataset)):
            s = dm.test_dataset[i]
            if not s["valid"]:
                broken.add(s["video_index"])
                continue
            views = dm.batch_transform(views_of(s))  # test items are whole videos: (views, 3, T, H, W)
            sums[s["video_index"]] = sums[s["video_index"]] + model(views).softmax(1).double().sum(0)
            labels[s["video_index"]] = s["label"]
    scored = [v for v in sums if v not in broken]
    top1 = [int(sums[v].argmax()) == labels[v] for v in scored]
    top5 = [labels[v] in sums[v].topk(5).indices.tolist() for v in scored]
    per_class = defaultdict(list)
    for v, ok in zip(scored, top1):
        per_class[labels[v]].append(ok)
    return {"top1": 100 * sum(top1) / len(scored), "top5": 100 * sum(top5) / len(scored),
            "mean_class_accuracy": 100 * sum(sum(c) / len(c) for c in per_class.values()) / len(per_class),
            "videos_scored": len(scored), "videos_skipped": len(broken)}


def test_multiview_test_matches_hand_computation_and_skips_broken_video(trained, synthetic_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    broken = sorted((root / "val").rglob("*.mp4"))[3]
    broken.write_bytes(b"this is not a video")
    ckpt = tmp_path / "ckpt" / "model.ckpt"
    ckpt.parent.mkdir()
    shutil.copy(trained / "checkpoints" / "last.ckpt", ckpt)
    assert main(["test", *cli_args(root, tmp_path / "runs"), "--ckpt_path", str(ckpt)]) == 0
    results = json.loads((tmp_path / "runs" / "tiny_r3d_bn" / "test_0" / "results.json").read_text())
    assert results["checkpoint"] == str(ckpt) and results["split"] == "val" and results["test_run"] == "test_0"
    assert results["annotation"].endswith("val.csv")
    expected = _hand_scores(ckpt, root)
    assert results["videos_scored"] == 11 and results["videos_skipped"] == 1
    for k, v in expected.items():
        assert results[k] == pytest.approx(v), k
    s = results["setting"]
    assert (s["backbone"], s["norm"], s["num_frames"], s["sampling_rate"]) == ("tiny_r3d", "bn", 8, 2)
    assert (s["clips_per_device"], s["devices"], s["num_nodes"], s["accumulate_grad_batches"], s["seed"]) == (
        8, 1, 1, 1, 0)  # the training setting, stored in the checkpoint (the test ran with 4 clips per device)


def test_two_tests_of_one_checkpoint_write_two_result_files(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last.ckpt"
    for _ in range(2):
        assert main(["test", *cli_args(synthetic_root, tmp_path), "--ckpt_path", str(ckpt)]) == 0
    files = sorted(tmp_path.rglob("results*.json"))
    assert [f.parent.name for f in files] == ["test_0", "test_1"]  # one per invocation, named by its test run
    first, second = (json.loads(f.read_text()) for f in files)
    assert first["top1"] == second["top1"] and first["checkpoint"] == second["checkpoint"] == str(ckpt)
    assert capsys.readouterr().out.count("results: top1") == 2  # printed once per test

    from gnvideo.report import markdown_table
    from gnvideo.results import load_results

    table = markdown_table(load_results([tmp_path]))  # repeated tests of one run count once
    assert "(n=2)" not in table and "Note: 2 results of seed 0" in table


def test_predict_prints_top5_per_video(trained, synthetic_root, tmp_path, capsys):
    videos = sorted((synthetic_root / "val").rglob("*.mp4"))[:2]
    ckpt = trained / "checkpoints" / "last.ckpt"
    assert main(["predict", *cli_args(synthetic_root, tmp_path), "--ckpt_path", str(ckpt),
                 "--data.predict_files", "[" + ",".join(map(str, videos)) + "]"]) == 0
    out = capsys.readouterr().out
    pred = json.loads((tmp_path / "tiny_r3d_bn" / "predict_0" / "predictions.json").read_text())["predictions"]
    assert sorted(p["file"] for p in pred) == [str(v) for v in videos]
    for p in pred:
        assert p["file"] in out and p["views"] == 2
        probs = [q["prob"] for q in p["top5"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0.0 < sum(probs) <= 1.0 + 1e-6
        assert f"{p['top5'][0]['label']} {probs[0]:.3f}" in out


def test_fast_dev_run(synthetic_root, tmp_path):
    assert main(["fit", *cli_args(synthetic_root, tmp_path, config="configs/synthetic/tiny_r3d_gn.yaml"),
                 "--trainer.fast_dev_run", "1"]) == 0
