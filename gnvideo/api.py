"""Programmatic run API: the gnvideo LightningCLI (links, checkpoint defaults, run folders, result writers, config
checks) and :func:`build`, which parses the options of one run and returns the built CLI without running it.

``gnvideo.cli`` (the command line) and ``gnvideo.demo`` both use this module; it imports neither.

Example::

    cli = build(["--config", "configs/synthetic/tiny_r3d_gn.yaml", "--trainer.max_epochs", "1"])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.ckpt_path)
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from gnvideo.module import VideoClassifier

__all__ = ["AppendingCSVLogger", "GNVideoCLI", "KeepingSaveConfigCallback", "build", "make_cli", "result_writer"]


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


class _AppendingWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv`` (a resumed attempt appends to the rows of the earlier ones)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))


class AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` survives a resume: rows logged before a kill are kept, new rows appended
    (Lightning's own writer deletes the file when the run folder exists)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class KeepingSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config of every attempt in the run folder: ``config.yaml`` for the first, then
    ``config_1.yaml``, ``config_2.yaml``, ... for resumed attempts (never overwritten)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        folder = Path(trainer.log_dir or trainer.default_root_dir)
        name, i = Path(self.config_filename), 0
        while (folder / self.config_filename).exists():
            i += 1
            self.config_filename = f"{name.stem}_{i}{name.suffix}"
        super().setup(trainer, pl_module, stage)


class GNVideoCLI(LightningCLI):
    """LightningCLI with the gnvideo links, checkpoint defaults, run folders, result writers and config checks."""

    def __init__(self, *args, stage: str = "fit", **kwargs) -> None:
        self._api_stage = stage  # used when there is no subcommand (run=False)
        self._api = not kwargs.get("run", True)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--run_name", type=str | None, default=None,
                            help="run folder name under trainer.default_root_dir (default: stem of the last --config)")
        if self._api:  # without subcommands there is no --ckpt_path; build() callers get it resolved in cli.ckpt_path
            parser.add_argument("--ckpt_path", type=str | None, default=None,
                                help="checkpoint path, or last/best of the run_name's newest run")
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

    def _fail(self, message: str) -> None:
        print(f"gnvideo {self._stage}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    @property
    def _stage(self) -> str:
        """The subcommand, or the stage given to :func:`build` when there is none (``run=False``)."""
        return self.subcommand or self._api_stage

    def before_instantiate_classes(self) -> None:
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        data = cfg.data
        if self._stage == "predict":
            files = data.get("predict_files")
            if not files:
                self._fail("data.predict_files: give the videos to classify (a video, a folder or a list file)")
            for f in [files] if isinstance(files, str) else files:
                if not Path(f).exists():
                    self._fail(f"data.predict_files: {f} does not exist")
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
        if ckpt in ("last", "best"):
            found = _find_checkpoint(exp_dir, ckpt)
            if found is None and (self._stage != "fit" or ckpt == "best"):
                self._fail(f"ckpt_path: no '{ckpt}' checkpoint under {exp_dir}/version_*/checkpoints")
            if found is None:
                print(f"gnvideo fit: no last checkpoint under {exp_dir}; starting a new run", file=sys.stderr)
            cfg.ckpt_path = str(found) if found else None
            if found is not None and self._stage == "fit":
                self._version = int(found.parent.parent.name[8:])
        if self._version is None:
            if self._stage == "fit":
                self._version = int(_versions(exp_dir)[-1].name[8:]) + 1 if _versions(exp_dir) else 0
            else:
                n = sum(1 for _ in exp_dir.glob(f"{self._stage}_*"))
                self._version = f"{self._stage}_{n}"
        self._root = root

    @property
    def ckpt_path(self) -> str | None:
        """``--ckpt_path`` after resolving ``last``/``best`` (for :func:`build` callers)."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        return cfg.get("ckpt_path")

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except (ValueError, FileNotFoundError, TypeError) as e:
            self._fail(str(e))

    def instantiate_trainer(self, **kwargs):
        logger = self._get(self.config_init, "trainer", default={}).get("logger")
        if logger is None or logger is True:
            common = {"save_dir": str(self._root), "name": self._run_name, "version": self._version}
            kwargs["logger"] = [AppendingCSVLogger(**common), TensorBoardLogger(default_hp_metric=False, **common)]
        return super().instantiate_trainer(**kwargs)


def make_cli(args: list[str] | None, run: bool, stage: str = "fit") -> GNVideoCLI:
    from gnvideo.callbacks import ExactResume, PredictionWriter, ResultWriter
    from gnvideo.data import KineticsDataModule

    return GNVideoCLI(
        VideoClassifier,
        KineticsDataModule,
        args=args,
        run=run,
        stage=stage,
        seed_everything_default=0,
        auto_configure_optimizers=False,
        # each attempt's config is kept: config.yaml, then config_1.yaml, ...
        save_config_callback=KeepingSaveConfigCallback,
        trainer_defaults={"default_root_dir": "runs",
                          "callbacks": [ResultWriter(), PredictionWriter(), ExactResume()]},
    )


def build(args: Sequence[str], stage: str = "fit") -> GNVideoCLI:
    """Programmatic API: parse ``args`` (the options of one ``gnvideo SUBCOMMAND``, without the subcommand) and build
    the model, datamodule and trainer without running anything.

    ``stage`` ("fit", "validate", "test", "predict") picks the run-folder naming and the config checks. Then call, e.g.,
    ``cli.trainer.fit(cli.model, datamodule=cli.datamodule, ckpt_path=cli.ckpt_path)``; ``cli.ckpt_path`` holds
    ``--ckpt_path`` with ``last``/``best`` already resolved to a file.
    """
    return make_cli(list(args), run=False, stage=stage)


def result_writer(trainer):
    """The :class:`gnvideo.callbacks.ResultWriter` of ``trainer`` (its ``last_result`` is the latest test)."""
    from gnvideo.callbacks import ResultWriter

    return next(c for c in trainer.callbacks if isinstance(c, ResultWriter))
