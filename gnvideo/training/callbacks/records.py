"""The writers of a run's records: results after each test, predictions after predict.

``RunRecorder`` stores the training setting (:class:`gnvideo.results.RunSetting`) in every checkpoint and, after each
test, writes one new result file (:func:`gnvideo.results.write_result`) and prints its line once (rank zero).
``PredictionWriter`` (a Lightning ``BasePredictionWriter``) writes ``predictions.json`` and prints the top-5 per video.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

__all__ = ["PredictionWriter", "RunRecorder"]


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
