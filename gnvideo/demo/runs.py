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
run trains for the same number of epochs, so smaller settings take more, smaller steps. Nothing looks at the test
clips before the test: there is no validation on them, and the last checkpoint is tested. ``--holdout_fraction F``
holds out F of the training videos instead and scores every run on them, without reading the test clips at all; the
demo's settings were chosen that way (README). ``--seeds`` repeats every cell per seed (the study in
``configs/study/``); the report then gives mean ± std. After the table the demo says in words what each norm loses
from the largest to the smallest setting, and gives the wall time of each phase.

On a CPU the training process uses the cores the DataLoader workers leave (``--threads``): with 2 cores and 2
workers decoding, a second torch thread only waits for a busy core (profile in README).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from gnvideo.models.norms import DEMO_KINDS

__all__ = ["cell_args", "effect_lines", "evaluate_last_checkpoint", "fit_and_test", "holdout_result", "main",
           "make_dataset", "parse_args", "parser", "run_demo", "time_lines", "training_threads"]

DemoNorm = Literal[tuple(DEMO_KINDS)]  # type: ignore[valid-type]


def parser() -> ArgumentParser:
    """The demo's options; ``--config FILE`` reads them from YAML (jsonargparse, as the other commands)."""
    p = ArgumentParser(prog="gnvideo demo", description=__doc__.split("\n\n")[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file of these options, e.g. configs/study/*.yaml")
    p.add_argument("--root", type=str, default="data/synthetic", help="synthetic dataset folder (made when absent)")
    p.add_argument("--out", type=str, default="runs/demo", help="folder for the runs, the table and the plot")
    p.add_argument("--norms", type=list[DemoNorm], default=["bn", "gn"], help="norms compared, e.g. [bn,gn,bgn]")
    p.add_argument("--clips_per_device", type=list[int], default=[8, 1], help="settings compared (c), e.g. [8,1]")
    p.add_argument("--simulated_devices", type=int, default=2, help="V: clips per step = c x V")
    p.add_argument("--epochs", type=int, default=14, help="per run, whatever the batch (README: how it was chosen)")
    p.add_argument("--backbone", type=str, default="tiny_r3d",
                   help="model preset; tiny_r3d_nl adds non-local blocks (report rows 'BN + NL2', ...)")
    p.add_argument("--num_groups", type=int, default=8, help="groups of gn and bgn")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--sampling_rate", type=int, default=2)
    p.add_argument("--crop_size", type=int, default=64)
    p.add_argument("--test_clips", type=int, default=4)
    p.add_argument("--test_crops", type=int, default=3)
    # the defaults of the runs were chosen on a holdout split of the training videos: README, "What the demo does"
    p.add_argument("--base_lr", type=float, default=0.1, help="LR for 64 clips per step (scaled linearly)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--threads", type=int | None, default=None,
                   help="torch threads of the training process (default: the CPU cores the workers leave, >= 1)")
    p.add_argument("--holdout_fraction", type=float, default=0.0,
                   help="> 0: hold out this fraction of the training videos and test each run on them (the same "
                        "views), never reading the held-out test videos: how the settings are chosen")
    p.add_argument("--seeds", type=list[int], default=[0], help="training seeds; each cell runs once per seed")
    p.add_argument("--dataset_seed", type=int, default=0, help="seed of the synthetic dataset")
    # 6: the translations and rotations (growing and shrinking stayed near chance in the demo's budget: README)
    p.add_argument("--num_classes", type=int, default=6, help="synthetic classes (when the dataset is made)")
    p.add_argument("--videos_per_class", type=int, default=50, help="synthetic training videos per class")
    p.add_argument("--val_videos_per_class", type=int, default=15, help="synthetic held-out videos per class")
    p.add_argument("--limit_batches", type=int | None, default=None, help="cap train batches per epoch (smoke tests)")
    return p


def parse_args(argv: Sequence[str] | None = None) -> Namespace:
    """Command-line options over ``--config`` files over the defaults."""
    return parser().parse_args(None if argv is None else list(argv))


def cell_args(a: Namespace, norm: str, clips: int, seed: int) -> tuple[str, list[str]]:
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
        # the last checkpoint is tested: no validation, no "best" checkpoint
        "--trainer.limit_val_batches", "0", "--checkpoint.save_top_k", "0", "--data.holdout_fraction",
        str(a.holdout_fraction), "--trainer.log_every_n_steps", "5",
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
        "--model.test_clips_per_forward", str(max(per_forward, a.test_clips * a.test_crops)),  # a video per forward
        "--data.num_workers", str(a.workers), "--data.pin_memory", "false", "--data.persistent_workers", "true",
        "--data.seed", str(seed), "--data.train_flip_prob", "0",  # a mirrored "moving left" clip moves right
        "--data.keyframe_check_files", "0",  # tiny synthetic clips: keyframe spacing costs them nothing worth a line
    ]
    if a.limit_batches:
        args += ["--trainer.limit_train_batches", str(a.limit_batches)]
    return name, args


def evaluate_last_checkpoint(cli) -> tuple:
    """Test the last checkpoint of the fitted run of ``cli`` on the held-out videos (multi-view).

    Returns:
        ``(result, path)``: the :class:`gnvideo.results.TestResult` and the file it was written to.
    """
    from gnvideo.training.callbacks import RunRecorder

    trainer = cli.trainer
    last = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    if not last or not Path(last).is_file():
        raise RuntimeError(f"demo: fit wrote no last.ckpt under {trainer.log_dir}")
    trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=last, verbose=False)
    recorder = next(c for c in trainer.callbacks if isinstance(c, RunRecorder))
    return recorder.last_result, recorder.last_result_path


def holdout_result(cli) -> tuple:
    """Test the last checkpoint of the fitted run of ``cli`` as :func:`evaluate_last_checkpoint` does (the same
    views, softmax averaged per video), on its holdout split (``data.holdout_fraction`` of the training videos)
    instead of the held-out videos, which are never read. The result file names the split ``holdout``.

    Returns:
        ``(result, path)``: the :class:`gnvideo.results.TestResult` and the file it was written to.
    """
    from gnvideo.data import ClipDataset

    dm = cli.datamodule
    h = dm.hparams
    dm.test_dataset = ClipDataset(dm.val_dataset.entries, mode="test", label_names=dm.label_names,
                                  transform=dm.test_transform, num_frames=h.num_frames,
                                  sampling_rate=h.sampling_rate, num_clips=h.test_num_clips,
                                  backend=h.decode_backend, seed=h.seed)
    dm.test_annotation = f"{dm.train_annotation} (holdout_fraction {h.holdout_fraction})"
    dm.test_split = "holdout"
    return evaluate_last_checkpoint(cli)


def fit_and_test(args: Sequence[str], times: dict | None = None):
    """Fit one run with the ``gnvideo`` options ``args`` (no subcommand), then test its last checkpoint.

    Uses the programmatic API (:func:`gnvideo.training.runner.build_cli` with ``run=False``) and the same trainer
    for both, so the result lands in the fit run's folder. With ``data.holdout_fraction > 0`` in ``args`` the run is
    scored on that holdout split instead (:func:`holdout_result`) and the held-out test videos are never read.

    Args:
        args: ``gnvideo fit`` options.
        times: when given, receives the wall seconds of ``"fit"`` (CLI and model set-up included) and ``"test"``.

    Returns:
        ``(result, path)``: the :class:`gnvideo.results.TestResult` and the file it was written to.
    """
    from gnvideo.training.runner import build_cli

    times = {} if times is None else times
    t0 = time.perf_counter()
    cli = build_cli(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    t1 = time.perf_counter()
    holdout = cli.datamodule.hparams.holdout_fraction > 0
    scored = holdout_result(cli) if holdout else evaluate_last_checkpoint(cli)
    times.update(fit=t1 - t0, test=time.perf_counter() - t1)
    return scored


def training_threads(a: Namespace) -> int:
    """torch threads for the training process: ``--threads``, else the CPU cores the DataLoader workers leave.

    More threads than free cores make OpenMP threads wait for one another (a worker decoding holds a core).
    """
    if a.threads is not None:
        if a.threads < 1:
            raise ValueError(f"threads: must be >= 1, got {a.threads}")
        return a.threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores - a.workers)


def make_dataset(a: Namespace):
    """Make the synthetic dataset of the options ``a`` if it is absent; returns its summary."""
    from gnvideo.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset(a.root, num_classes=a.num_classes, videos_per_class=a.videos_per_class,
                                  val_videos_per_class=a.val_videos_per_class, seed=a.dataset_seed, progress=True)


def run_demo(a: Namespace, times: dict | None = None) -> list[dict]:
    """Make the data, fit and test every cell with :func:`training_threads` torch threads (restored afterwards);
    returns the result dicts (the result files' contents).

    Args:
        a: the demo's options (:func:`parse_args`).
        times: when given, receives the wall seconds of ``"dataset"`` and, per run name, ``{"fit", "test"}``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(training_threads(a))
    try:
        return _run_cells(a, {} if times is None else times)
    finally:
        torch.set_num_threads(threads)


def _run_cells(a: Namespace, times: dict) -> list[dict]:
    import torch

    t0 = time.perf_counter()
    print(f"[demo] synthetic dataset in {a.root} ...", flush=True)
    summary = make_dataset(a)
    times["dataset"] = time.perf_counter() - t0
    state = "already there" if summary.skipped else f"made in {summary.seconds:.0f} s"
    print(f"[demo] {summary.num_train} training and {summary.num_val} held-out videos, "
          f"{len(summary.label_names)} classes ({state}); {torch.get_num_threads()} torch threads, "
          f"{a.workers} loader workers", flush=True)
    views = f"multi-view test ({a.test_clips} clips x {a.test_crops} crops per video)"
    scored = f"{views} on the {a.holdout_fraction:.0%} of the training videos held out" if a.holdout_fraction else views
    cells = [(norm, clips, seed) for seed in a.seeds for clips in a.clips_per_device for norm in a.norms]
    results = []
    for i, (norm, clips, seed) in enumerate(cells, 1):
        name, args = cell_args(a, norm, clips, seed)
        print(f"\n[demo] run {i}/{len(cells)}: {norm.upper()}, {clips} clips per device "
              f"({clips * a.simulated_devices} clips per step), {a.epochs} epochs, seed {seed}; then {scored}",
              flush=True)
        times[name] = {}
        result, path = fit_and_test(args, times[name])
        results.append({**result.to_dict(), "path": str(path)})
        top1 = "n/a" if result.top1 is None else f"{result.top1:.1f}%"
        print(f"[demo] {name}: top-1 {top1}  (fit {times[name]['fit']:.0f} s, test {times[name]['test']:.0f} s; "
              f"{time.perf_counter() - t0:.0f} s so far)", flush=True)
    return results


def _top1_by_seed(cells: dict, norm: str, frames: int, clips: int) -> dict:
    """Top-1 per seed of one table cell (norm row, frames, clips per norm); empty when the cell is absent."""
    return {r["setting"].get("seed"): float(r["top1"]) for r in cells.get((norm, frames, clips), [])
            if r["top1"] is not None}


def _difference(a: dict, b: dict) -> tuple[float, str]:
    """``mean(a - b)`` over the seeds both have, and "" or, with several seeds, each seed's difference in the
    direction of the mean (positive: the same way as the mean), e.g. `` (seeds 0, 1, 2: 21.0, 18.2, 25.0)``."""
    seeds = sorted(a.keys() & b.keys(), key=str)
    diffs = [a[s] - b[s] for s in seeds]
    mean = statistics.mean(diffs)
    sign = 1 if mean >= 0 else -1
    per_seed = f" (seeds {', '.join(map(str, seeds))}: {', '.join(f'{sign * d + 0.0:.1f}' for d in diffs)})"
    return mean, per_seed if len(seeds) > 1 else ""


def _clips(n: int) -> str:
    return f"{n} clip" + ("" if n == 1 else "s")


def effect_lines(results: Sequence[dict]) -> list[str]:
    """The table in words: what each norm loses from the largest to the smallest clips-per-device setting, and how
    far each other norm is from BN at the smallest (top-1 means over the seeds both cells have, and per seed)."""
    from gnvideo.models.norms import REPORT_ORDER
    from gnvideo.report import collect

    cells = collect(results)
    lines = []
    for frames in sorted({f for _, f, _ in cells}):
        here = {k: v for k, v in cells.items() if k[1] == frames}
        norms = sorted({n for n, _, _ in here}, key=lambda n: REPORT_ORDER.index(n) if n in REPORT_ORDER else 99)
        settings = sorted({c for _, _, c in here})
        large, small = settings[-1], settings[0]
        at = f" ({frames} frames)" if len({f for _, f, _ in cells}) > 1 else ""
        drops = []
        for n in norms:
            hi, lo = _top1_by_seed(here, n, frames, large), _top1_by_seed(here, n, frames, small)
            if large != small and hi.keys() & lo.keys():
                d, per_seed = _difference(hi, lo)
                drops.append(f"{n.upper()} {'loses' if d >= 0 else 'gains'} {abs(d):.1f} points{per_seed}")
        if drops:
            lines.append(f"From {_clips(large)} to {_clips(small)} per device{at}, top-1: " + "; ".join(drops) + ".")
        bn = _top1_by_seed(here, "bn", frames, small)
        apart = []
        for n in norms:
            other = _top1_by_seed(here, n, frames, small)
            if n != "bn" and bn.keys() & other.keys():
                d, per_seed = _difference(other, bn)
                apart.append(f"{n.upper()} is {abs(d):.1f} points {'above' if d >= 0 else 'below'} BN{per_seed}")
        if apart:
            lines.append(f"At {_clips(small)} per device{at}: " + "; ".join(apart) + ".")
    return lines


def time_lines(times: dict) -> list[str]:
    """The wall time of each phase: the dataset, then each run's fit and test."""
    runs = "; ".join(f"{name} {t['fit']:.0f} + {t['test']:.0f}" for name, t in times.items() if name != "dataset")
    return [f"Wall time: dataset {times['dataset']:.0f} s; fit + test (s) of each run: {runs}."]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gnvideo demo``."""
    from gnvideo.report import render

    a = parse_args(argv)
    t0 = time.perf_counter()
    times: dict = {}
    results = run_demo(a, times)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = out / "bn_vs_gn.png"
    table = render(results, plot_path=plot, chance=True)
    if a.holdout_fraction > 0:
        table += (f"\nScored on the holdout split ({a.holdout_fraction:.0%} of the training videos), not on the "
                  "held-out test videos.")
    text = "\n".join([table, "", *effect_lines(results), *time_lines(times)])
    (out / "table.md").write_text(text + "\n")
    print("\n" + text)
    print(f"\n[demo] table: {out / 'table.md'}   plot: {plot}   wall time {time.perf_counter() - t0:.0f} s")
    return 0
