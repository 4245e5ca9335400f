"""Callbacks: the run's setting in every checkpoint, test result files, prediction files, exact-resume RNG states.

All files are written and printed by rank zero only; collectives (the multi-view reduction) run on every rank.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from gnvideo.results import RunSetting, TestResult, new_result_path, write_result

__all__ = ["ExactResume", "PredictionWriter", "ResultWriter", "run_setting"]


def _dm_value(trainer, name: str, default=None):
    dm = getattr(trainer, "datamodule", None)
    if dm is None:
        return default
    hp = getattr(dm, "hparams", {}) or {}
    return hp[name] if name in hp else getattr(dm, name, default)


def _run_folder(trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


def _run_name(trainer) -> str | None:
    logger = trainer.logger
    if logger is None:
        return None
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return f"{logger.name}/{version}"


def run_setting(trainer, pl_module) -> RunSetting:
    """The :class:`RunSetting` of the current run, from the trainer, the module's and the datamodule's arguments."""
    from gnvideo.data import IMAGENET_MEAN, IMAGENET_STD

    hp = pl_module.hparams
    seed = _dm_value(trainer, "seed")
    root = _dm_value(trainer, "root")
    return RunSetting(
        backbone=hp.backbone, dataset=Path(str(root)).name if root else None, num_classes=hp.num_classes,
        num_frames=_dm_value(trainer, "num_frames"), sampling_rate=_dm_value(trainer, "sampling_rate"),
        clips_per_device=hp.clips_per_device, devices=trainer.num_devices, num_nodes=trainer.num_nodes,
        accumulate_grad_batches=trainer.accumulate_grad_batches, norm=hp.norm,
        norm_options=dict(hp.norm_options or {}),
        input_mean=tuple(float(v) for v in _dm_value(trainer, "mean", IMAGENET_MEAN)),
        input_std=tuple(float(v) for v in _dm_value(trainer, "std", IMAGENET_STD)),
        seed=int(seed) if seed is not None else None,
    )


class ResultWriter(pl.Callback):
    """Stores the training setting in every checkpoint; after ``test`` writes one new result file per invocation.

    The file goes into the test run's folder (``trainer.log_dir``, e.g. ``runs/NAME/test_3/results.json``); an
    existing file is never replaced (:func:`gnvideo.results.new_result_path`). The module computes the metrics in
    ``on_test_epoch_end`` (``pl_module.test_metrics``); this callback writes them in ``on_test_end``.

    Attributes:
        last_result: the :class:`TestResult` of the latest test (on rank zero), for programmatic callers.
    """

    def __init__(self) -> None:
        self._fit_setting: RunSetting | None = None
        self._ckpt_setting: dict | None = None
        self.last_result: TestResult | None = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_setting = run_setting(trainer, pl_module)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["gnvideo_setting"] = (self._fit_setting or run_setting(trainer, pl_module)).to_dict()

    def on_test_start(self, trainer, pl_module) -> None:
        self._ckpt_setting = None
        if trainer.ckpt_path and Path(trainer.ckpt_path).is_file():
            ckpt = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=False, mmap=True)
            self._ckpt_setting = ckpt.get("gnvideo_setting")

    def on_test_end(self, trainer, pl_module) -> None:
        metrics = getattr(pl_module, "test_metrics", None)
        if metrics is None or not trainer.is_global_zero:
            return
        if self._ckpt_setting:
            setting = RunSetting.from_dict(self._ckpt_setting)
        else:
            setting = self._fit_setting or run_setting(trainer, pl_module)
        dm = trainer.datamodule
        result = TestResult(
            top1=metrics["top1"], top5=metrics["top5"], mean_class_accuracy=metrics["mean_class_accuracy"],
            videos_scored=int(metrics["videos_scored"]), videos_skipped=int(metrics["videos_skipped"]),
            setting=setting, test_num_clips=_dm_value(trainer, "test_num_clips"),
            test_num_crops=_dm_value(trainer, "test_num_crops"),
            checkpoint=str(trainer.ckpt_path) if trainer.ckpt_path else None,
            annotation=str(getattr(dm, "test_annotation", None)), split=getattr(dm, "test_split", None),
            run=_run_name(trainer),
        )
        path = write_result(result, _run_folder(trainer))
        self.last_result = result
        print(f"results: top1 {metrics['top1']:.2f}%  top5 {metrics['top5']:.2f}%  mean class acc "
              f"{metrics['mean_class_accuracy']:.2f}%  videos scored {metrics['videos_scored']}, skipped "
              f"{metrics['videos_skipped']} -> {path}")


class PredictionWriter(BasePredictionWriter):
    """After ``predict``: top-5 classes per video, printed and written to a new ``predictions.json`` in the run folder.

    The module adds every view's softmax to ``pl_module.predict_views``; this writer reduces it over ranks (every rank
    takes part) and rank zero prints and writes. ``last_predictions`` keeps the list for programmatic callers.
    """

    def __init__(self, top_k: int = 5) -> None:
        super().__init__(write_interval="epoch")
        self.top_k = top_k
        self.last_predictions: list[dict] | None = None

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        scores = pl_module.predict_views.reduce(pl_module.reduce_device())
        if not trainer.is_global_zero:
            return
        dm = trainer.datamodule
        ds = getattr(dm, "predict_dataset", None)
        files = [str(p) for p in ds.paths] if ds is not None and getattr(ds, "paths", None) is not None else None
        names = getattr(dm, "label_names", None)
        idx, probs = scores.mean_probs()
        out = []
        for i, p in zip(idx.tolist(), probs):
            top = p.topk(min(self.top_k, p.numel()))
            preds = [{"label": names[c] if names and c < len(names) else str(c), "index": c, "prob": float(v)}
                     for v, c in zip(top.values.tolist(), top.indices.tolist())]
            out.append({"video_index": i, "file": files[i] if files and i < len(files) else None,
                        "views": int(scores.view_counts[i]), "top5": preds})
        skipped = torch.nonzero(scores.skipped).flatten().tolist()
        for r in out:
            print(f"{r['file'] or r['video_index']}: " + ", ".join(f"{q['label']} {q['prob']:.3f}" for q in r["top5"]))
        for i in skipped:
            print(f"{files[i] if files and i < len(files) else i}: skipped (unreadable view)", file=sys.stderr)
        path = new_result_path(_run_folder(trainer), "predictions")
        path.write_text(json.dumps({"predictions": out, "skipped": skipped}, indent=2) + "\n")
        self.last_predictions = out


class ExactResume(pl.Callback):
    """Exact resume: saves the RNG states of this process (python, numpy, torch CPU, every CUDA device) in each
    checkpoint and restores them when a fit resumes from it, so the resumed run draws the same random numbers (dropout)
    as an uninterrupted one; and makes Lightning apply the saved position of the train loader (see ``on_train_start``).
    The states are put back just before the first training batch after the resume, so the
    sanity check and the loader iterators created in between do not shift them. Loggers are flushed at every save, so a
    killed run's metrics.csv holds every row up to its last checkpoint.

    Under DDP every rank stores its own states (``rng_states_rank{r}``); a checkpoint is written by rank zero, so the
    other ranks' states are gathered to it first.
    """

    @staticmethod
    def _states() -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain types and tensors only, so the checkpoint loads with torch.load(weights_only=True)
        states = {"python": random.getstate(), "torch": torch.get_rng_state(),
                  "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]}
        if torch.cuda.is_available():
            states["cuda"] = torch.cuda.get_rng_state_all()
        return states

    def __init__(self) -> None:
        self._pending: dict | None = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            logger.save()
        states = self._states()
        if trainer.world_size > 1:
            gathered = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, states)
        else:
            gathered = [states]
        for r, s in enumerate(gathered):
            checkpoint[f"rng_states_rank{r}"] = s

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self._pending = checkpoint.get(f"rng_states_rank{trainer.global_rank}")

    def on_train_start(self, trainer, pl_module) -> None:
        # Lightning loads the train loader's state (ResumableDataLoader: epoch and batches done) only when it builds
        # the loader after the loop state is restored; configure_optimizers' trainer.estimated_stepping_batches builds
        # it earlier, so the saved state would be ignored and the epoch restarted. Load it here and make the iterator
        # again, before the first batch is fetched.
        loop = trainer.fit_loop
        if loop.restarting and loop._combined_loader_states_to_load and loop._combined_loader is not None:
            loop._load_combined_loader_states()
            iter(loop._data_fetcher)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        states, self._pending = self._pending, None
        if states is None:
            return
        random.setstate(states["python"])
        kind, keys, pos, has_gauss, gauss = states["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        torch.set_rng_state(states["torch"])
        if "cuda" in states and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])
