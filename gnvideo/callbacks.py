"""Callbacks: precise BN statistics, LR logging, and the writers of a run's records (results, predictions).

``RunRecorder`` stores the training setting (:class:`gnvideo.results.RunSetting`) in every checkpoint and, after each
test, writes one new result file (:func:`gnvideo.results.write_result`) and prints its line once (rank zero).
``PredictionWriter`` (a Lightning ``BasePredictionWriter``) writes ``predictions.json`` and prints the top-5 per video.

``PreciseBN`` follows the Non-local recipe (``TRAIN.COMPUTE_PRECISE_BN``, ``ITER_COMPUTE_PRECISE_BN: 200``): before
each validation during ``fit`` and once more when training ends, the running statistics of every batch-dependent norm
layer (``gnvideo.models.norms.BATCH_DEPENDENT_KINDS``: bn, syncbn, sub_bn, bgn) are recomputed as the plain average of
the batch statistics of ``num_batches`` training batches under the current weights, instead of the exponential average
collected while the weights moved. The checkpoints saved after it (``best``, ``last``) hold these statistics, so
``gnvideo test`` of a checkpoint scores them. Models without such layers (gn, ln, in, frozen_bn) are left alone.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, LearningRateMonitor, ThroughputMonitor
from torch import nn

from gnvideo.models.norm_layers import BatchGroupNorm3d

__all__ = ["GroupNormKernelSetup", "LRMonitor", "PredictionWriter", "PreciseBN", "RunRecorder", "batch_norm_layers",
           "update_bn_stats"]


def clips_in_batch(batch: dict) -> int:
    """Clips in a training batch (its ``video`` rows)."""
    return int(batch["video"].shape[0])


class ClipThroughput(ThroughputMonitor):
    """Lightning's ``ThroughputMonitor`` counting clips: logs ``train/device/samples_per_sec`` (clips per second on
    one device) and, under DDP, ``train/samples_per_sec`` (all devices), averaged over the last ``window_size``
    optimizer steps, with ``train/time`` (s) and ``train/samples`` (clips so far).

    Args:
        window_size: steps averaged (a value appears after this many steps).
    """

    def __init__(self, window_size: int = 50) -> None:
        super().__init__(batch_size_fn=clips_in_batch, window_size=window_size, separator="/")
        self._module_has_flops = False  # no FLOP counts: skips Lightning's warning that flops_per_batch is missing


class LRMonitor(LearningRateMonitor):
    """Lightning's ``LearningRateMonitor`` that stays quiet in a run without a logger instead of stopping it."""

    def on_train_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        self._off = not trainer.loggers
        if not self._off:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not getattr(self, "_off", False):
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *args, **kwargs) -> None:
        if not getattr(self, "_off", False):
            super().on_train_epoch_start(trainer, *args, **kwargs)


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Layers whose running statistics come from training batches (BN with running stats, sub_bn, bgn)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            out.append(m)
        elif isinstance(m, BatchGroupNorm3d):
            out.append(m)
    return out


@torch.no_grad()
def update_bn_stats(model: nn.Module, batches, forward=None) -> int:
    """Set the running mean and variance of every batch-dependent norm of ``model`` to the average over ``batches``.

    Args:
        model: the network; run in train mode for the pass and put back in its previous mode.
        batches: an iterable of inputs for ``forward``.
        forward: ``forward(batch)`` runs the model (default ``model(batch)``).

    Returns:
        The number of batches used (0 leaves the statistics as they were).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    forward = forward or model
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in layers]
    was_training = model.training
    model.train()
    n = 0
    try:
        for i, batch in enumerate(batches):
            for m in layers:
                m.momentum = 1.0 / (i + 1)  # running = mean of the i+1 batch statistics so far
            forward(batch)
            n += 1
    finally:
        for m, mom in zip(layers, momenta):
            m.momentum = mom
        if n == 0:
            for m, (mean, var) in zip(layers, saved):
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
        model.train(was_training)
    return n


class PreciseBN(pl.Callback):
    """Recompute BN statistics over ``num_batches`` training batches before each validation of ``fit`` and at its end.

    Args:
        num_batches: training batches per recomputation (200 in the Non-local recipe); 0 turns it off.
        on_test: also recompute before ``test`` / ``validate`` runs outside ``fit`` (for checkpoints trained without
            it, e.g. imported ones); off by default because fit's checkpoints already hold the recomputed statistics.
    """

    def __init__(self, num_batches: int = 200, on_test: bool = False) -> None:
        if num_batches < 0:
            raise ValueError(f"precise_bn.num_batches must be >= 0, got {num_batches}")
        self.num_batches = int(num_batches)
        self.on_test = bool(on_test)
        self._done_at: int | None = None

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.num_batches == 0 or self._done_at == trainer.global_step:
            return
        if hasattr(pl_module, "load_initial_weights"):  # callbacks' start hooks run before the module's
            pl_module.load_initial_weights()
        model = getattr(pl_module, "model", pl_module)
        layers = batch_norm_layers(model)
        if not layers:
            return  # batch-independent norms only: nothing to recompute
        dm = trainer.datamodule
        if dm is not None and getattr(dm, "train_dataset", True) is None:
            dm.setup("fit")  # test / validate runs: the training videos are not set up yet
        loader = dm.train_dataloader() if dm is not None else trainer.fit_loop._data_source.dataloader()

        def forward(batch):
            batch = trainer.strategy.batch_to_device(batch)  # with the module's batch-transfer hooks
            with trainer.precision_plugin.forward_context():
                pl_module(batch["video"])

        n = update_bn_stats(model, itertools.islice(iter(loader), self.num_batches), forward)
        del loader
        self._done_at = trainer.global_step
        if trainer.is_global_zero:
            print(f"precise BN: statistics of {len(layers)} layers from {n} training batches (step "
                  f"{trainer.global_step})")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (trainer.state.fn == "fit" and not trainer.sanity_checking) or (trainer.state.fn == "validate"
                                                                           and self.on_test):
            self._run(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_test:
            self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the last epoch: before ModelCheckpoint (Lightning runs checkpoint callbacks last) saves last.ckpt
        last_epoch = trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
        if last_epoch or last_step or trainer.should_stop:
            self._run(trainer, pl_module)


def _datamodule_attr(trainer: pl.Trainer, name: str, default=None):
    """The data module's resolved attribute ``name`` (e.g. the default test annotation), else its hyperparameter."""
    dm = getattr(trainer, "datamodule", None)
    value = getattr(dm, name, None)
    if value is None:
        value = (getattr(dm, "hparams", {}) or {}).get(name)
    return default if value is None else value


def _run_folder(trainer: pl.Trainer) -> Path:
    """The run's log folder; ``trainer.log_dir`` is a broadcast under DDP, so every rank must call this."""
    return Path(trainer.log_dir or trainer.default_root_dir)


class RunRecorder(pl.Callback):
    """Records the training setting in checkpoints and writes one result file per test.

    Attributes:
        last_result: the :class:`gnvideo.results.TestResult` of the latest test (rank zero; None before).
        last_result_path: where it was written.
    """

    def __init__(self) -> None:
        self.fit_setting: dict | None = None
        self.last_result = None
        self.last_result_path: Path | None = None

    def _setting(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict:
        import dataclasses

        from gnvideo.results import setting_from_run

        return dataclasses.asdict(setting_from_run(trainer, pl_module))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.fit_setting is None:  # a resumed run keeps the setting its checkpoint recorded
            self.fit_setting = self._setting(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint["gnvideo_setting"] = self.fit_setting or self._setting(trainer, pl_module)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self.fit_setting = checkpoint.get("gnvideo_setting", self.fit_setting)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from gnvideo.results import TestResult, write_result

        folder = _run_folder(trainer)
        metrics = getattr(pl_module, "test_metrics", None)
        if metrics is None or not trainer.is_global_zero:
            return
        views = {k: _datamodule_attr(trainer, k) for k in ("test_num_clips", "test_num_crops", "test_view",
                                                             "test_short_side", "test_crop_size")}
        result = TestResult(
            top1=metrics["top1"], top5=metrics["top5"], mean_class_accuracy=metrics["mean_class_accuracy"],
            videos_scored=int(metrics["videos_scored"]), videos_skipped=int(metrics["videos_skipped"]),
            num_classes=int(pl_module.hparams.num_classes), checkpoint=trainer.ckpt_path,
            annotation=_datamodule_attr(trainer, "test_annotation"), split=_datamodule_attr(trainer, "test_split"),
            test_views=views, setting=self.fit_setting or self._setting(trainer, pl_module),
            test_run=folder.name)
        path = write_result(result, folder)
        self.last_result, self.last_result_path = result, path

        def pct(v):
            return "n/a" if v is None or v != v else f"{v:.2f}%"

        print(f"results: top1 {pct(result.top1)}  top5 {pct(result.top5)}  mean class acc "
              f"{pct(result.mean_class_accuracy)}  videos scored {result.videos_scored}, skipped "
              f"{result.videos_skipped} -> {path}")


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.json`` in the run folder and prints the top-5 classes of every video (rank zero).

    The module's ``predict_views`` aggregator holds the per-video softmax sums of this rank; they are summed over
    ranks here (every rank takes part), then rank zero writes. Videos with an unreadable view are listed as skipped in
    ``predictions.json`` (on the console the dataset has named each once, with its reason).

    Attributes:
        predictions: the rows written by the latest predict (rank zero).
    """

    def __init__(self, top_k: int = 5) -> None:
        super().__init__(write_interval="epoch")
        self.top_k = top_k
        self.predictions: list[dict] = []

    @staticmethod
    def _names_and_files(trainer: pl.Trainer) -> tuple[list[str] | None, list[str] | None]:
        dm = getattr(trainer, "datamodule", None)
        names = getattr(dm, "label_names", None)
        ds = getattr(dm, "predict_dataset", None)
        if names is None and ds is not None:
            names = getattr(ds, "label_names", None)
        files = getattr(ds, "paths", None)
        files = [str(p) for p in files] if files is not None else None
        return (list(names) if names is not None else None), files

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        device = pl_module.device if pl_module.device.type == "cuda" else torch.device("cpu")
        scores = pl_module.predict_views.reduce(device)
        folder = _run_folder(trainer)
        if not trainer.is_global_zero:
            return
        names, files = self._names_and_files(trainer)

        def name(i: int) -> str:
            return files[i] if files and i < len(files) else str(i)

        idx, probs = scores.mean_probs()
        rows = []
        for i, p in zip(idx.tolist(), probs):
            top = p.topk(min(self.top_k, p.numel()))
            preds = [{"label": names[c] if names and c < len(names) else str(c), "index": c, "prob": float(v)}
                     for v, c in zip(top.values.tolist(), top.indices.tolist())]
            rows.append({"video_index": i, "file": files[i] if files and i < len(files) else None,
                         "views": int(scores.view_counts[i]), "top5": preds})
        skipped = torch.nonzero(scores.skipped).flatten().tolist()
        for r in rows:
            print(f"{name(r['video_index'])}: " + ", ".join(f"{q['label']} {q['prob']:.3f}" for q in r["top5"]))
        # skipped videos are not printed again: the dataset named each once, with its reason, when it met it, and
        # the data module's teardown prints their count; predictions.json lists them
        path = folder / "predictions.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"predictions": rows, "skipped": [name(i) for i in skipped]}, indent=2) + "\n")
        self.predictions = rows


class GroupNormKernelSetup(pl.Callback):
    """Builds or loads the CUDA GroupNorm extension once before a run, never inside a step.

    ``gnvideo.ops.group_norm`` only loads an existing build (a call never compiles), so without this a GN model on a
    GPU would run the reference path. On a CUDA run whose model has GN-family layers with ``use_kernel``, local rank 0
    builds (first time only: about 2 minutes) and loads the extension, the other ranks wait at a barrier and then load
    the same build. A failed build is reported in one line and the run goes on with the reference path.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from gnvideo.models.norm_layers import GroupNorm3d

        if trainer.strategy.root_device.type != "cuda":
            return
        if not any(isinstance(m, GroupNorm3d) and m.use_kernel for m in pl_module.modules()):
            return
        from gnvideo import ops

        error = None
        if trainer.local_rank == 0:
            try:
                ops.load_extension()
            except RuntimeError as e:  # the reference path still gives the same numbers, only slower
                error = e
        trainer.strategy.barrier("gnvideo_ops_build")
        if trainer.local_rank != 0:
            try:
                ops.load_extension()
            except RuntimeError as e:
                error = e
        if error is not None:
            print(f"gnvideo: warning: GroupNorm CUDA kernel unavailable, using F.group_norm: {error}")
