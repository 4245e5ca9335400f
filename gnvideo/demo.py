"""``gnvideo demo``: the BN-vs-GN experiment end to end on the built-in synthetic dataset.

Steps: make the synthetic motion dataset if it is absent (``gnvideo.data.synthetic``); for each clips-per-device
setting and each norm, ``gnvideo fit`` a small 3D ResNet and ``gnvideo test`` it with multi-view testing on the held-out
``val`` clips; print the BN-vs-GN table with the chance level and save the plot.

The paper's protocol is mimicked on one device: a fixed number of simulated devices (``--simulated-devices``, V)
each holding ``c`` clips, so an optimizer step sees ``c x V`` clips and the LR is scaled linearly with that total.
BN's per-device statistics come from ``sub_bn`` with ``clips_per_group = c`` on one forward of ``c x V`` clips: it
normalizes each group of ``c`` clips on its own, as ``c`` clips per GPU would be. GN, BGN, LN and IN run ``c`` clips
per forward and accumulate the gradients of V forwards, which is what V devices with ``c`` clips each compute. Every
run trains for the same number of epochs, so smaller settings take more, smaller steps. Checkpoint selection never
looks at the test clips: the last checkpoint is tested. ``--seeds`` repeats every cell per seed (the study in
``configs/study/``); the report then gives mean ± std.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "run_demo"]


def _parser():
    """The demo's options on jsonargparse (the config system of LightningCLI): ``--config FILE.yaml`` sets any of them
    (keys with ``_``), unknown keys are an error, later command-line options win."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    p = ArgumentParser(prog="gnvideo demo", description=__doc__.split("\n\n")[0], default_meta=False)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file of these options, e.g. configs/study/*.yaml")
    p.add_argument("--root", default="data/synthetic", help="synthetic dataset folder (made when absent)")
    p.add_argument("--out", default="runs/demo", help="folder for the runs, the table and the plot")
    p.add_argument("--norms", nargs="+", default=["bn", "gn"], choices=["bn", "gn", "bgn", "ln", "in"])
    p.add_argument("--clips-per-device", nargs="+", type=int, default=[8, 2], help="settings compared (c)")
    p.add_argument("--simulated-devices", type=int, default=2, help="V: clips per step = c x V")
    p.add_argument("--epochs", type=int, default=20, help="per run; 20 keeps the demo under 10 minutes on 2 CPU cores")
    p.add_argument("--backbone", default="tiny_r3d")
    p.add_argument("--num-groups", type=int, default=8, help="groups of gn and bgn")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--sampling-rate", type=int, default=2)
    p.add_argument("--crop-size", type=int, default=64)
    p.add_argument("--test-clips", type=int, default=4)
    p.add_argument("--test-crops", type=int, default=3)
    # 0.1 measured: with 16 clips per step BN stayed near chance at 0.2 (10 % top-1, loss ~ln 8) and 0.4 (19 %) on
    # this data while GN learned; at 0.1 both learn (BN 55-69 % over 3 seeds at 16 and 32 clips per step, 12 epochs)
    p.add_argument("--base-lr", type=float, default=0.1, help="LR for 64 clips per step (scaled linearly)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds; each cell runs once per seed")
    p.add_argument("--dataset-seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--num-classes", type=int, default=8, help="synthetic classes (when the dataset is made)")
    p.add_argument("--videos-per-class", type=int, default=40, help="synthetic training videos per class")
    p.add_argument("--val-videos-per-class", type=int, default=10, help="synthetic held-out videos per class")
    p.add_argument("--limit-batches", type=int, default=None, help="cap train batches per epoch (smoke tests)")
    return p


def _parse(argv: Sequence[str] | None):
    """Command-line options over the ``--config`` YAML file(s) over the defaults."""
    return _parser().parse_args(list(argv) if argv is not None else None)


def _run_args(a, norm: str, clips: int, seed: int) -> tuple[str, list[str]]:
    """Run name and the ``gnvideo`` arguments shared by fit and test of one (norm, clips per device, seed) run."""
    kind, options = norm, {}
    if norm == "bn":
        kind, options = "sub_bn", {"clips_per_group": clips}
    elif norm in ("gn", "bgn"):
        options = {"num_groups": a.num_groups}
    name = f"{norm}_{clips}clips" + (f"_seed{seed}" if len(a.seeds) > 1 else "")
    if kind == "sub_bn":  # one forward of c x V clips, BN statistics per group of c clips
        per_forward, accumulate = clips * a.simulated_devices, 1
    else:  # batch-independent norms: c clips per forward, gradients of V forwards summed as V devices would
        per_forward, accumulate = clips, a.simulated_devices
    args = [
        "--run_name", name, "--seed_everything", str(seed),
        "--trainer.default_root_dir", a.out, "--trainer.max_epochs", str(a.epochs),
        "--trainer.check_val_every_n_epoch", str(a.epochs), "--trainer.log_every_n_steps", "5",
        "--trainer.num_sanity_val_steps", "0", "--trainer.accumulate_grad_batches", str(accumulate),
        # zero-initialized residual branches leave a one-block-per-stage net without temporal modelling for many
        # epochs; the demo's short schedule needs them live from the start
        "--model.backbone", a.backbone, "--model.norm", kind, "--model.norm_options", json.dumps(options),
        "--model.zero_init_residual", "false", "--model.dropout", "0.2", "--model.base_lr", str(a.base_lr),
        "--model.schedule", "cosine", "--model.warmup_fraction", "0.1",
        "--data.root", a.root, "--data.clips_per_device", str(per_forward),
        "--data.num_frames", str(a.frames), "--data.sampling_rate", str(a.sampling_rate),
        "--data.train_short_side", f"[{a.crop_size}, {a.crop_size * 5 // 4}]", "--data.crop_size", str(a.crop_size),
        "--data.test_short_side", str(a.crop_size), "--data.test_crop_size", str(a.crop_size),
        "--data.test_num_clips", str(a.test_clips), "--data.test_num_crops", str(a.test_crops),
        "--data.num_workers", str(a.workers), "--data.pin_memory", "false", "--data.persistent_workers", "false",
        "--data.seed", str(seed), "--data.hflip_prob", "0",  # a mirrored "moving left" clip moves right
    ]
    if a.limit_batches:
        args += ["--trainer.limit_train_batches", str(a.limit_batches)]
    return name, args


def _quiet_build(args: list[str], stage: str):
    import warnings

    from gnvideo.api import build

    with warnings.catch_warnings():  # `gnvideo demo ...` has its own argv; the runs take theirs from us
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
        return build(args, stage=stage)


def run_cell(a, norm: str, clips: int, seed: int):
    """Fit one (norm, clips per device, seed) run and test its last checkpoint (programmatic API of
    :func:`gnvideo.cli.build`); returns the :class:`gnvideo.results.TestResult`."""
    from gnvideo.api import result_writer

    name, args = _run_args(a, norm, clips, seed)
    fit = _quiet_build(args, "fit")
    fit.trainer.fit(fit.model, datamodule=fit.datamodule)
    ckpt = next((c.last_model_path for c in fit.trainer.checkpoint_callbacks if c.last_model_path), None)
    if not ckpt:
        raise RuntimeError(f"demo: fit of {name} wrote no last.ckpt under {fit.trainer.log_dir}")
    print(f"[demo] multi-view test of {name} ({a.test_clips} clips x {a.test_crops} crops per video)", flush=True)
    test = _quiet_build([*args, "--ckpt_path", ckpt], "test")
    test.trainer.test(test.model, datamodule=test.datamodule, ckpt_path=ckpt)
    result = result_writer(test.trainer).last_result
    if result is None:
        raise RuntimeError(f"demo: test of {name} wrote no result")
    return result


def run_demo(a) -> list:
    """Make the data, fit and test every cell; returns the :class:`gnvideo.results.TestResult` of each."""
    from gnvideo.data.synthetic import make_synthetic_dataset

    t0 = time.perf_counter()
    print(f"[demo] synthetic dataset in {a.root} ...", flush=True)
    summary = make_synthetic_dataset(a.root, num_classes=a.num_classes, videos_per_class=a.videos_per_class,
                                     val_videos_per_class=a.val_videos_per_class, seed=a.dataset_seed,
                                     progress=True)
    state = "already there" if summary.skipped else f"made in {summary.seconds:.0f} s"
    print(f"[demo] {summary.num_train} training and {summary.num_val} held-out videos, "
          f"{len(summary.label_names)} classes ({state})", flush=True)
    cells = [(norm, clips, seed) for seed in a.seeds for clips in a.clips_per_device for norm in a.norms]
    results = []
    for i, (norm, clips, seed) in enumerate(cells, 1):
        print(f"\n[demo] run {i}/{len(cells)}: {norm.upper()}, {clips} clips per device "
              f"({clips * a.simulated_devices} clips per step), {a.epochs} epochs, seed {seed}", flush=True)
        result = run_cell(a, norm, clips, seed)
        results.append(result)
        print(f"[demo] {result.run}: top-1 {result.top1:.1f}%  ({time.perf_counter() - t0:.0f} s so far)", flush=True)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gnvideo demo``."""
    from gnvideo.report import render

    a = _parse(argv)
    t0 = time.perf_counter()
    results = run_demo(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "bn_vs_gn.png"
    table = render(results, plot_path=plot, chance=True)
    (out / "table.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\n[demo] table: {out / 'table.md'}   plot: {plot}   wall time {time.perf_counter() - t0:.0f} s")
    return 0
