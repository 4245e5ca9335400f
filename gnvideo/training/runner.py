"""gnvideo's LightningCLI (fit/validate/test/predict) and its programmatic run API :func:`build_cli`.

:mod:`gnvideo.cli` (the ``gnvideo`` command) and :mod:`gnvideo.demo` build on this module. Examples::

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
``config.attempt-N.yaml``; a resumed run's ``metrics.csv`` ends as the uninterrupted run's would (the killed attempt's
rows past its checkpoint are replaced), its epoch metrics and clip counters continue, and ``attempts.jsonl`` records
each attempt. Checkpoints are written atomically (:class:`gnvideo.training.atomic_checkpoints.AtomicCheckpointIO`), and
``last`` skips a damaged file.

Preemption (:class:`gnvideo.training.preemption.Preemption`, option group ``--preemption``): SIGTERM or SIGUSR1
saves ``last.ckpt`` at the end of the step in progress and stops the fit (exit status 128 + signal); under SLURM,
SIGUSR1 (``#SBATCH --signal=USR1@90``: the time-limit warning) also requeues the job, and the requeued job
(``SLURM_RESTART_COUNT`` > 0) resumes the run its first attempt started, in the same folder and logger version,
without ``--ckpt_path``. Lightning's own SLURM requeue (an ``hpc_ckpt`` in another folder) is turned off.
``test`` writes a new result file in its own run folder (``test_N/results.json``; see
:mod:`gnvideo.results`); ``predict`` prints the top-5 classes per video and writes ``predict_N/predictions.json``.
Config mistakes stop before training with the key named. ``--ckpt_path`` is read as every checkpoint is
(``gnvideo.models.checkpoint_io``: tensors and plain types only, nothing of the file runs), and a file that is
missing, refused, damaged or not a gnvideo run's checkpoint stops with one line before any run folder is made.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gnvideo.errors import ConfigError, config_prefix
from gnvideo.training.atomic_checkpoints import AtomicCheckpointIO
from gnvideo.training.callbacks import (
    ClipThroughput,
    GroupNormKernelSetup,
    LRMonitor,
    PreciseBN,
    PredictionWriter,
    RunRecorder,
)
from gnvideo.training.module import VideoClassifier
from gnvideo.training.preemption import Preemption, signal_numbers, slurm_job_id, slurm_restart_count
from gnvideo.training.resume import ExactResume, StepCheckpoint
from gnvideo.training.run_folders import find_checkpoint, run_of_slurm_job, versions
from gnvideo.training.run_logs import AppendingCSVLogger, AttemptConfigCallback, LogsInCheckpoints

__all__ = ["GNVideoCLI", "build_cli", "check_run_checkpoint"]


def _with_default_plugins(plugins) -> list:
    """The trainer's plugins plus atomic checkpoint writes and, under SLURM, a cluster environment that leaves
    requeueing to :class:`Preemption` (Lightning's writes ``hpc_ckpt_N.ckpt`` into ``default_root_dir``, which
    then competes with the run's ``last.ckpt``), unless the config chose its own."""
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
        plugins.append(SLURMEnvironment(auto_requeue=False))
    return plugins


def check_run_checkpoint(path: str, subcommand: str | None) -> None:
    """``path`` (``--ckpt_path``) is a Lightning checkpoint of a gnvideo run that reads without running code, and for
    ``fit`` one that can resume (it holds the optimizer state).

    Lightning reads the file's ``hyper_parameters`` into the model's settings (a ``_class_path`` there would name the
    class to build), so they must be arguments of :class:`VideoClassifier`.

    Raises:
        ConfigError: key ``ckpt_path`` (``CheckpointError`` when the file cannot be read safely).
    """
    import inspect

    from gnvideo.models.checkpoint_io import read_checkpoint

    ckpt = read_checkpoint(path, "ckpt_path", mmap=True)  # the tensors stay on disk; Lightning reads them later
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping) \
            or "pytorch-lightning_version" not in ckpt:
        raise ConfigError("ckpt_path", f"{path} is not the checkpoint of a run (no Lightning 'state_dict'): to start "
                          f"from its weights, give it as --model.init_from {path}")
    hparams = ckpt.get("hyper_parameters") or {}
    known = {*inspect.signature(VideoClassifier).parameters, "_instantiator"}
    foreign = sorted(str(k) for k in hparams if k not in known) if isinstance(hparams, Mapping) else ["(not a dict)"]
    if foreign:
        raise ConfigError("ckpt_path", f"{path} is not the checkpoint of a gnvideo run: its hyper_parameters hold "
                          f"{', '.join(foreign[:3])}, which VideoClassifier does not take; to start from its weights, "
                          f"give it as --model.init_from {path}")
    if subcommand == "fit" and not ckpt.get("optimizer_states"):
        raise ConfigError("ckpt_path", f"{path} holds weights only (no optimizer state) and cannot resume a fit: "
                          f"fine-tune from it with --model.init_from {path}")


def _check_predict_inputs(cfg) -> None:
    """``data.predict_files`` names files that exist; without weights to load, warn that predictions are random."""
    files = cfg.data.get("predict_files")
    if not files:
        raise ConfigError("data.predict_files", "give the videos to classify (a video, a folder or a list file)")
    for f in [files] if isinstance(files, str) else files:
        if not Path(f).exists():
            hint = "" if isinstance(files, str) else " (a comma in a file name splits the [..] list: pass the " \
                "video alone, its folder, or a text file listing it)"
            raise ConfigError("data.predict_files", f"{f} does not exist{hint}")
    if not cfg.get("ckpt_path") and not cfg.model.get("init_from"):
        print("gnvideo predict: warning: no --ckpt_path or --model.init_from, predicting with random weights",
              file=sys.stderr)


def _check_sub_bn_groups(cfg) -> None:
    """``sub_bn`` splits each forward's clips into groups: ``clips_per_group`` must divide ``clips_per_device``."""
    if cfg.model.get("norm") != "sub_bn":
        return
    k = (cfg.model.get("norm_options") or {}).get("clips_per_group")
    if k and int(cfg.data.clips_per_device) % int(k):
        raise ConfigError("model.norm_options.clips_per_group", f"{k} does not divide data.clips_per_device "
                          f"{cfg.data.clips_per_device} (sub_bn splits each forward's clips into groups of {k})")


def _follow_weights_statistics(cfg) -> None:
    """Unless ``data.mean_std`` / ``data.mean`` / ``data.std`` is set, normalize the input with the statistics of
    the ImageNet weights the model starts from (``model.pretrained_2d``)."""
    from gnvideo.models.weights import input_statistics

    data = cfg.data
    if data.get("mean_std") is not None or data.get("mean") is not None or data.get("std") is not None:
        return
    stats = input_statistics(cfg.model.get("pretrained_2d"))
    if stats is not None:
        data.mean, data.std = (list(v) for v in stats)


def _labels_for_predict(cfg) -> None:
    """Without a dataset, the class names come from the checkpoint's run (its labels file, if it still exists)."""
    data = cfg.data
    if not cfg.get("ckpt_path") or data.get("labels") or (Path(data.root) / "labels.txt").is_file():
        return
    from gnvideo.data.datamodule import labels_from_checkpoint

    data.labels, n = labels_from_checkpoint(cfg.ckpt_path)
    if data.labels is None and n not in (None, 400):
        raise ConfigError("data.labels", f"the checkpoint has {n} classes and its labels file is gone; give the "
                          "class-name file (one name per line)")


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
        parser.add_lightning_class_args(StepCheckpoint, "last_checkpoint")  # an epoch's last step: at its end
        parser.set_defaults({"last_checkpoint.monitor": None, "last_checkpoint.save_top_k": 0,
                             "last_checkpoint.save_last": True, "last_checkpoint.every_n_train_steps": 1000,
                             "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(LRMonitor, "lr_monitor")  # logs train/lr/<param group> per step
        parser.set_defaults({"lr_monitor.logging_interval": "step"})
        parser.add_lightning_class_args(ClipThroughput, "throughput")  # train/device/samples_per_sec: clips/s
        parser.add_lightning_class_args(PreciseBN, "precise_bn")  # --precise_bn.num_batches 200 (paper BN cells)
        parser.set_defaults({"precise_bn.num_batches": 0})
        parser.add_lightning_class_args(Preemption, "preemption")  # signals: save last.ckpt, stop, requeue (SLURM)

    def _fail(self, message: str) -> None:
        subcommand = getattr(self, "subcommand", None) or self.config.get("subcommand")  # set after parsing
        print(f"gnvideo {subcommand or 'run'}: error: {message}", file=sys.stderr)
        raise SystemExit(2)

    def parse_arguments(self, parser, args) -> None:
        """Parse, then check a ``--ckpt_path`` file before Lightning reads it (its hyperparameters, then the run's
        restore): a file that cannot be read safely or is no run's checkpoint stops here with one line."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt and ckpt not in ("last", "best"):
            try:
                check_run_checkpoint(ckpt, subcommand)
            except ConfigError as err:
                self._fail(str(err))

    def before_instantiate_classes(self) -> None:
        """Check the settings that need no instantiated class, resolve ``--ckpt_path last|best``, fill what follows
        from other settings, and choose the run folder; any mistake stops here with one line."""
        # run=False (the programmatic API, gnvideo.demo): one flat config, a fit run folder
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        try:
            if self.subcommand == "predict":
                _check_predict_inputs(cfg)
            elif not Path(cfg.data.root).is_dir():
                raise ConfigError("data.root", f"folder {cfg.data.root} does not exist")
            _check_sub_bn_groups(cfg)
            with config_prefix("preemption."):
                for key in ("signals", "requeue_signals"):
                    signal_numbers((cfg.get("preemption") or {}).get(key) or [], key)
            _follow_weights_statistics(cfg)
            if "weights_only" in cfg:  # Lightning's restore of --ckpt_path: never a full unpickle
                if cfg.weights_only is False:
                    raise ConfigError("weights_only", "gnvideo reads checkpoints as tensors and plain types only "
                                      "(unpickling more can run code); convert a file you trust with "
                                      "'gnvideo convert-weights FILE OUT.safetensors' and fine-tune from it with "
                                      "--model.init_from")
                cfg.weights_only = True
            configs = cfg.get("config") or []
            self._run_name = cfg.get("run_name") or (Path(str(configs[-1])).stem if configs else "default")
            self._root = Path(cfg.trainer.get("default_root_dir") or "runs")
            self._version = self._resolve_checkpoint(cfg, self._root / self._run_name)
            if self.subcommand == "predict":
                _labels_for_predict(cfg)
        except ConfigError as err:
            self._fail(str(err))
        if self._version is None:
            self._version = self._new_version(self._root / self._run_name)

    def _resolve_checkpoint(self, cfg, exp_dir: Path) -> int | None:
        """Check ``ckpt_path`` and resolve "last" / "best" to the newest such file of the run; returns the fit run
        version to continue in (a resumed fit), else None. A requeued SLURM job without ``ckpt_path`` continues the
        run its first attempt started."""
        ckpt = cfg.get("ckpt_path")
        self._starts_over = False
        if ckpt is None and self.subcommand == "fit" and slurm_job_id() and slurm_restart_count() > 0:
            return self._resume_requeued_job(cfg, exp_dir)
        if ckpt not in ("last", "best"):  # a file: checked when the arguments were parsed
            return None
        found = find_checkpoint(exp_dir, ckpt)
        damaged = [] if found is not None or ckpt != "last" else \
            sorted(exp_dir.glob("version_*/checkpoints/last*.ckpt"), key=lambda p: p.stat().st_mtime)
        if damaged:  # only damaged ones (each warned): starting a new run would silently drop the user's run
            check_run_checkpoint(str(damaged[-1]), self.subcommand)
        if found is None and (self.subcommand != "fit" or ckpt == "best"):
            raise ConfigError("ckpt_path", f"no '{ckpt}' checkpoint under {exp_dir}/version_*/checkpoints")
        if found is None:
            print(f"gnvideo fit: no last checkpoint under {exp_dir}; starting a new run", file=sys.stderr)
        else:
            check_run_checkpoint(str(found), self.subcommand)
        cfg.ckpt_path = str(found) if found else None
        return int(found.parent.parent.name[8:]) if found is not None and self.subcommand == "fit" else None

    def _resume_requeued_job(self, cfg, exp_dir: Path) -> int | None:
        """The run of this SLURM job (its ``attempts.jsonl``) and its newest ``last`` checkpoint, if it has one."""
        job, restart = slurm_job_id(), slurm_restart_count()
        run = run_of_slurm_job(exp_dir, job)
        if run is None:
            print(f"gnvideo fit: SLURM job {job} restart {restart}: no run of this job under {exp_dir}; "
                  "starting a new run", file=sys.stderr)
            return None
        found = find_checkpoint(exp_dir, "last", run=run)
        if found is not None:
            check_run_checkpoint(str(found), self.subcommand)
        cfg.ckpt_path = str(found) if found else None
        self._starts_over = found is None
        what = f"resuming from {found}" if found else "no checkpoint yet: starting over in it"
        print(f"gnvideo fit: SLURM job {job} restart {restart}: run {run}, {what}", file=sys.stderr)
        return int(run.name[8:])

    def _new_version(self, exp_dir: Path) -> int | str:
        """``version_N`` (N = last + 1) for a fit, ``<subcommand>_N`` for the others."""
        if self.subcommand in ("fit", None):
            return int(versions(exp_dir)[-1].name[8:]) + 1 if versions(exp_dir) else 0
        return f"{self.subcommand}_{sum(1 for _ in exp_dir.glob(f'{self.subcommand}_*'))}"

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except ConfigError as e:  # at the run's start (weights, devices): one line, nothing trained
            self._fail(str(e))
        except SIGTERMException as e:  # Lightning's own SIGTERM stop (before training started) exits 0: say it failed
            if e.code is None:
                raise SystemExit(128 + signal.SIGTERM) from e
            raise

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            self.datamodule.setup(self.subcommand)  # annotation errors surface now, before a run folder exists
        except (ValueError, FileNotFoundError, TypeError) as e:
            self._fail(str(e))

    def instantiate_trainer(self, **kwargs):
        trainer_cfg = self._get(self.config_init, "trainer", default={})
        logger = trainer_cfg.get("logger")
        if logger is None or logger is True:
            common = {"save_dir": str(self._root), "name": self._run_name, "version": self._version}
            keep = 0 if getattr(self, "_starts_over", False) else None  # a requeued job's run without checkpoint
            kwargs["logger"] = [AppendingCSVLogger(keep_rows=keep, **common),
                                TensorBoardLogger(default_hp_metric=False, **common)]
        if self.subcommand in ("fit", None):  # RNG states, loader position, epoch metrics and log rows on resume
            callbacks = trainer_cfg.get("callbacks") or []
            kwargs["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), ExactResume(),
                                   LogsInCheckpoints()]
        kwargs["plugins"] = _with_default_plugins(trainer_cfg.get("plugins"))
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
