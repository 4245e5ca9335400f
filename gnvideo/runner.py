"""gnvideo's LightningCLI (fit/validate/test/predict) and its programmatic run API :func:`build_cli`.

:mod:`gnvideo.cli` (the ``gnvideo`` command) and :mod:`gnvideo.demo` both build on this module; it imports neither,
so there is no cli <-> demo cycle. Examples (through ``gnvideo``)::

    gnvideo fit --config configs/kinetics400/base.yaml --config configs/kinetics400/norm_gn.yaml \
        --config configs/kinetics400/i3d_r50_gn_32x2_8clips.yaml
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --data.clips_per_device 4 --trainer.max_steps 50
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --ckpt_path last      # resume the latest run
    gnvideo test --config configs/synthetic/tiny_r3d_gn.yaml --ckpt_path best     # writes test_N/results.json
    gnvideo predict --config configs/synthetic/tiny_r3d_gn.yaml --data.predict_files [a.mp4,b.mp4] --ckpt_path X
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --print_config
    gnvideo report runs/ --paper --plot table8.png

Runs live in ``{trainer.default_root_dir}/{run_name}/version_N`` (fit) or ``.../{subcommand}_N``; ``run_name``
defaults to the stem of the last ``--config`` file. Each run folder holds ``config.yaml`` (resolved config),
``metrics.csv``, TensorBoard events and ``checkpoints/``: the best by ``val/top1`` (option group ``--checkpoint``) and
``last.ckpt``, written after each validation and every ``--last_checkpoint.every_n_train_steps`` (1000) steps.
``--ckpt_path last`` and ``--ckpt_path best`` resolve to the newest run of ``run_name`` that has such a checkpoint;
``fit --ckpt_path last`` resumes there and keeps logging in that folder: the exact step, optimizer and LR-scheduler
state, the train loader's position in the epoch (``ResumableDataLoader``) and every rank's RNG states
(``resume.ExactResume``), so a run resumed mid-epoch ends bit-identical on the CPU to an uninterrupted one.
``metrics.csv`` is appended to (``run_logs.AppendingCSVLogger``) and each resumed attempt writes
``config.attempt-N.yaml``. ``test`` writes a new result file in its own run folder (``test_N/results.json``; see
:mod:`gnvideo.results`); ``predict`` prints the top-5 classes per video and writes ``predict_N/predictions.json``.
Config mistakes stop before training with the key named.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from gnvideo.callbacks import ClipThroughput, GroupNormKernelSetup, LRMonitor, PreciseBN, PredictionWriter, RunRecorder
from gnvideo.errors import ConfigError
from gnvideo.module import VideoClassifier
from gnvideo.resume import ExactResume
from gnvideo.run_logs import AppendingCSVLogger, AttemptConfigCallback

__all__ = ["GNVideoCLI", "build_cli"]


def _versions(exp_dir: Path) -> list[Path]:
    runs = [p for p in exp_dir.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
    return sorted(runs, key=lambda p: int(p.name[8:]))


def _find_checkpoint(exp_dir: Path, which: str) -> Path | None:
    """Newest ``last.ckpt`` (which="last") or ``best*.ckpt`` (which="best") among the fit runs of an experiment."""
    for run in reversed(_versions(exp_dir)):
        pattern = "last*.ckpt" if which == "last" else "best*.ckpt"
        found = sorted((run / "checkpoints").glob(pattern), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
    return None


class GNVideoCLI(LightningCLI):
    """LightningCLI with the gnvideo links, checkpoint defaults, run folders and config checks."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="run folder name under trainer.default_root_dir (default: stem of the last --config)")
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.clips_per_device", "model.clips_per_device")
        # best by val/top1 (saved when validation ends) and last.ckpt every N optimizer steps (for resuming); Lightning
        # allows one trigger per ModelCheckpoint and defers monitored saves until the first validation, hence two.
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.monitor": "val/top1", "checkpoint.mode": "max", "checkpoint.save_last": True,
                             "checkpoint.filename": "best-{epoch}-{step}", "checkpoint.save_top_k": 1,
                             "checkpoint.auto_insert_metric_name": False, "checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.monitor": None, "last_checkpoint.save_top_k": 0,
                             "last_checkpoint.save_last": True, "last_checkpoint.every_n_train_steps": 1000,
                             "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(LRMonitor, "lr_monitor")  # logs train/lr/<param group> per step
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(ClipThroughput, "throughput")  # train/device/samples_per_sec: clips/s
        parser.add_lightning_class_args(PreciseBN, "precise_bn")  # --precise_bn.num_batches 200 (paper BN cells)
        parser.set_defaults({"precise_bn.num_batches": 0})

    def _fail(self, message: str) -> None:
        print(f"gnvideo {self.subcommand or 'run'}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def before_instantiate_classes(self) -> None:
        # run=False (the programmatic API, gnvideo.demo): one flat config, a fit run folder
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        data = cfg.data
        if self.subcommand == "predict":
            files = data.get("predict_files")
            if not files:
                self._fail("data.predict_files: give the videos to classify (a video, a folder or a list file)")
            for f in [files] if isinstance(files, str) else files:
                if not Path(f).exists():
                    hint = "" if isinstance(files, str) else " (a comma in a file name splits the [..] list: pass " \
                        "the video alone, its folder, or a text file listing it)"
                    self._fail(f"data.predict_files: {f} does not exist{hint}")
            if not cfg.get("ckpt_path") and not cfg.model.get("init_from"):
                print("gnvideo predict: warning: no --ckpt_path or --model.init_from, predicting with random weights",
                      file=sys.stderr)
        elif not Path(data.root).is_dir():
            self._fail(f"data.root: folder {data.root} does not exist")
        configs = cfg.get("config") or []
        name = cfg.get("run_name") or (Path(str(configs[-1])).stem if configs else "default")
        root = Path(cfg.trainer.get("default_root_dir") or "runs")
        exp_dir = root / name
        self._run_name, self._version = name, None
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in ("last", "best") and not Path(ckpt).is_file():
            self._fail(f"ckpt_path: checkpoint file not found: {ckpt}")
        k = (cfg.model.get("norm_options") or {}).get("clips_per_group") if cfg.model.get("norm") == "sub_bn" else None
        if k and int(data.clips_per_device) % int(k):
            self._fail(f"model.norm_options.clips_per_group: {k} does not divide data.clips_per_device "
                       f"{data.clips_per_device} (sub_bn splits each forward's clips into groups of {k})")
        if ckpt in ("last", "best"):
            found = _find_checkpoint(exp_dir, ckpt)
            if found is None and (self.subcommand != "fit" or ckpt == "best"):
                self._fail(f"ckpt_path: no '{ckpt}' checkpoint under {exp_dir}/version_*/checkpoints")
            if found is None:
                print(f"gnvideo fit: no last checkpoint under {exp_dir}; starting a new run", file=sys.stderr)
            cfg.ckpt_path = str(found) if found else None
            if found is not None and self.subcommand == "fit":
                self._version = int(found.parent.parent.name[8:])
        if self.subcommand == "predict" and cfg.get("ckpt_path") and not data.get("labels") and \
                not (Path(data.root) / "labels.txt").is_file():  # no dataset: the class names of the checkpoint's run
            from gnvideo.data.datamodule import labels_from_checkpoint

            data.labels, n = labels_from_checkpoint(cfg.ckpt_path)
            if data.labels is None and n not in (None, 400):
                self._fail(f"data.labels: the checkpoint has {n} classes and its labels file is gone; give the "
                           "class-name file (one name per line)")
        if self._version is None:
            if self.subcommand in ("fit", None):
                self._version = int(_versions(exp_dir)[-1].name[8:]) + 1 if _versions(exp_dir) else 0
            else:
                n = sum(1 for _ in exp_dir.glob(f"{self.subcommand}_*"))
                self._version = f"{self.subcommand}_{n}"
        self._root = root

    def _run_subcommand(self, subcommand: str) -> None:
        from gnvideo.models.weights import WeightsError

        try:
            super()._run_subcommand(subcommand)
        except WeightsError as e:  # initial weights load when the run starts: one line, nothing trained yet
            self._fail(str(e))
        except ConfigError as e:  # found by the data module once the trainer is known (devices)
            self._fail(str(e))

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            self.datamodule.setup(self.subcommand)  # annotation errors surface now, before a run folder exists
        except (ValueError, FileNotFoundError, TypeError) as e:
            self._fail(str(e))

    def instantiate_trainer(self, **kwargs):
        logger = self._get(self.config_init, "trainer", default={}).get("logger")
        if logger is None or logger is True:
            common = {"save_dir": str(self._root), "name": self._run_name, "version": self._version}
            kwargs["logger"] = [AppendingCSVLogger(**common), TensorBoardLogger(default_hp_metric=False, **common)]
        if self.subcommand in ("fit", None):  # RNG states and loader position, restored on resume
            callbacks = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
            kwargs["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), ExactResume()]
        return super().instantiate_trainer(**kwargs)


def build_cli(args: Sequence[str] | None = None, run: bool = True) -> GNVideoCLI:
    """The ``gnvideo`` LightningCLI for ``args``.

    With ``run=False`` nothing runs: ``args`` hold no subcommand, and the caller drives ``cli.trainer.fit`` /
    ``test`` with ``cli.model`` and ``cli.datamodule`` (how :mod:`gnvideo.demo` trains); the run folder is a fit run's
    (``{default_root_dir}/{run_name}/version_N``). Every trainer carries a :class:`RunRecorder` (training setting in
    checkpoints, one result file per test), a :class:`PredictionWriter` and a :class:`GroupNormKernelSetup`.
    """
    import warnings

    from gnvideo.data import KineticsDataModule

    with warnings.catch_warnings():
        # args given by a caller (the demo, tests) are meant to replace sys.argv, which Lightning warns about
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return GNVideoCLI(
            VideoClassifier,
            KineticsDataModule,
            args=None if args is None else list(args),
            run=run,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_callback=AttemptConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": "runs",
                              "callbacks": [RunRecorder(), PredictionWriter(), GroupNormKernelSetup()]},
        )
