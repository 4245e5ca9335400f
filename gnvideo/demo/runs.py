"""``gnvideo demo``: the BN-vs-GN experiment end to end on the built-in synthetic dataset.

Steps: make the synthetic motion dataset if it is absent (``gnvideo.data.synthetic``); for each clips-per-device
setting and each norm, fit a small 3D ResNet and test its last checkpoint with multi-view testing on the held-out
``val`` clips (:func:`fit_and_test`, the programmatic API of :func:`gnvideo.training.runner.build_cli`); print the
BN-vs-GN table with the chance level and save the plot. Options come from the command line and ``--config`` YAML files
(``configs/study/``), parsed by jsonargparse as every ``gnvideo`` command is.

The paper's protocol is mimicked on one device: a fixed number of simulated devices (``--simulated_devices``, V)
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
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from gnvideo.models.norms import DEMO_KINDS

__all__ = ["fit_and_test", "main", "parser", "run_demo"]

DemoNorm = Literal[tuple(DEMO_KINDS)]  # type: ignore[valid-type]


def parser() -> ArgumentParser:
    """The demo's options; ``--config FILE`` reads them from YAML (jsonargparse, as the other commands)."""
    p = ArgumentParser(prog="gnvideo demo", description=__doc__.split("\n\n")[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file of these options, e.g. configs/study/*.yaml")
    p.add_argument("--root", type=str, default="data/synthetic", help="synthetic dataset folder (made when absent)")
    p.add_argument("--out", type=str, default="runs/demo", help="folder for the runs, the table and the plot")
    p.add_argument("--norms", type=list[DemoNorm], default=["bn", "gn"], help="norms compared, e.g. [bn,gn,bgn]")
    p.add_argument("--clips_per_device", type=list[int], default=[8, 2], help="settings compared (c), e.g. [8,2]")
    p.add_argument("--simulated_devices", type=int, default=2, help="V: clips per step = c x V")
    p.add_argument("--epochs", type=int, default=20, help="per run; 20 keeps the demo under 10 minutes on 2 CPU cores")
    p.add_argument("--backbone", type=str, default="tiny_r3d",
                   help="model preset; tiny_r3d_nl adds non-local blocks (report rows 'BN + NL2', ...)")
    p.add_argument("--num_groups", type=int, default=8, help="groups of gn and bgn")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--sampling_rate", type=int, default=2)
    p.add_argument("--crop_size", type=int, default=64)
    p.add_argument("--test_clips", type=int, default=4)
    p.add_argument("--test_crops", type=int, default=3)
    # 0.1 measured: with 16 clips per step BN stayed near chance at 0.2 (10 % top-1, loss ~ln 8) and 0.4 (19 %) on
    # this data while GN learned; at 0.1 both learn (BN 55-69 % over 3 seeds at 16 and 32 clips per step, 12 epochs)
    p.add_argument("--base_lr", type=float, default=0.1, help="LR for 64 clips per step (scaled linearly)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--seeds", type=list[int], default=[0], help="training seeds; each cell runs once per seed")
    p.add_argument("--dataset_seed", type=int, default=0, help="seed of the synthetic dataset")
    p.add_argument("--num_classes", type=int, default=8, help="synthetic classes (when the dataset is made)")
    p.add_argument("--videos_per_class", type=int, default=40, help="synthetic training videos per class")
    p.add_argument("--val_videos_per_class", type=int, default=10, help="synthetic held-out videos per class")
    p.add_argument("--limit_batches", type=int | None, default=None, help="cap train batches per epoch (smoke tests)")
    return p


def _parse(argv: Sequence[str] | None) -> Namespace:
    """Command-line options over ``--config`` files over the defaults."""
    return parser().parse_args(None if argv is None else list(argv))


def _run_args(a: Namespace, norm: str, clips: int, seed: int) -> tuple[str, list[str]]:
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
        "--data.train_short_side_range", f"[{a.crop_size}, {a.crop_size * 5 // 4}]",
        "--data.train_crop_size", str(a.crop_size), "--data.val_short_side", str(a.crop_size),
        "--data.val_crop_size", str(a.crop_size), "--data.test_short_side", str(a.crop_size),
        "--data.test_crop_size", str(a.crop_size),
        "--data.test_num_clips", str(a.test_clips), "--data.test_num_crops", str(a.test_crops),
        "--data.num_workers", str(a.workers), "--data.pin_memory", "false", "--data.persistent_workers", "false",
        "--data.seed", str(seed), "--data.train_flip_prob", "0",  # a mirrored "moving left" clip moves right
        "--data.keyframe_check_files", "0",  # tiny synthetic clips: keyframe spacing costs them nothing worth a line
    ]
    if a.limit_batches:
        args += ["--trainer.limit_train_batches", str(a.limit_batches)]
    return name, args


def fit_and_test(args: Sequence[str]):
    """Fit one run with the ``gnvideo`` options ``args`` (no subcommand), then test its last checkpoint.

    Uses the programmatic API (:func:`gnvideo.training.runner.build_cli` with ``run=False``) and the same trainer for
    both, so the result lands in the fit run's folder.

    Returns:
        ``(result, path)``: the :class:`gnvideo.results.TestResult` and the file it was written to.
    """
    from gnvideo.training.callbacks import RunRecorder
    from gnvideo.training.runner import build_cli

    cli = build_cli(args, run=False)
    trainer = cli.trainer
    trainer.fit(cli.model, datamodule=cli.datamodule)
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    if not last or not Path(last).is_file():
        raise RuntimeError(f"demo: fit wrote no last.ckpt under {trainer.log_dir}")
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=last, verbose=False)
    recorder = next(c for c in trainer.callbacks if isinstance(c, RunRecorder))
    return recorder.last_result, recorder.last_result_path


def run_demo(a: Namespace) -> list[dict]:
    """Make the data, fit and test every cell; returns the result dicts (the result files' contents)."""
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
        name, args = _run_args(a, norm, clips, seed)
        print(f"\n[demo] run {i}/{len(cells)}: {norm.upper()}, {clips} clips per device "
              f"({clips * a.simulated_devices} clips per step), {a.epochs} epochs, seed {seed}; then multi-view test "
              f"({a.test_clips} clips x {a.test_crops} crops per video)", flush=True)
        result, path = fit_and_test(args)
        results.append({**result.to_dict(), "path": str(path)})
        top1 = "n/a" if result.top1 is None else f"{result.top1:.1f}%"
        print(f"[demo] {name}: top-1 {top1}  ({time.perf_counter() - t0:.0f} s so far)", flush=True)
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
