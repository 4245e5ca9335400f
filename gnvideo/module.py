"""LightningModule for video classification: model, loss, metrics, optimizer and LR schedule.

The recipe follows the Non-local / GN-paper Kinetics setting: SGD with momentum 0.9, weight decay 1e-4 (norm parameters
and biases exempt by default), base LR 0.01 for 64 clips scaled linearly with the total batch
``clips_per_device x world_size x accumulate_grad_batches``, LR divided by 10 at 37.5% and 75% of the optimizer steps
(``schedule="step"``) or cosine decay with linear warm-up (``schedule="cosine"``).

Batches are dicts from ``gnvideo.data``: ``video`` float (B, 3, T, H, W), ``label`` int64 (B,), ``video_index`` (B,),
``view_index`` (B,), ``valid`` bool (B,). Rows with ``valid=False`` are dropped in validation, test and predict; a video
with any invalid view is never scored (see :mod:`gnvideo.evaluation`).
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from gnvideo.evaluation import MultiViewAggregator, video_metrics

__all__ = ["VideoClassifier", "lr_factor"]


def lr_factor(step: int, total: int, schedule: str, milestones=(0.375, 0.75), gamma: float = 0.1,
              warmup_steps: int = 0, warmup_start: float = 0.01) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` of ``total``.

    ``step``: ``gamma ** (number of milestones m with step >= m * total)``; ``cosine``: half-cosine from 1 to 0 after
    the warm-up; ``constant``: 1. A linear warm-up from ``warmup_start`` to 1 over ``warmup_steps`` comes first.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    if schedule == "step":
        return gamma ** sum(step >= round(m * total) for m in milestones)
    if schedule == "cosine":
        span = max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    return 1.0


def _config_key(message: str, norm_options: dict) -> str:
    """Best guess of the config key an error from ``build_model``/``build_norm`` is about."""
    low = message.lower()
    if low.startswith("unknown model") or "available presets" in low:
        return "model.backbone"
    if "unknown norm kind" in low:
        return "model.norm"
    for opt in sorted(norm_options, key=len, reverse=True):
        if f"{opt.lower()}=" in low or f"option {opt.lower()}" in low or f"{opt.lower()} must" in low:
            return f"model.norm_options.{opt}"
    named = re.search(r"option(?:\(s\))? \[?'?([a-z_]+)", low)
    if named:
        return f"model.norm_options.{named.group(1)}"
    if "option" in low:
        return "model.norm_options"
    if "norm" in low:
        return "model.norm"
    return "model"


def _load_state(path: str, key: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{key}: file {p} does not exist")
    return torch.load(p, map_location="cpu", weights_only=False)


class VideoClassifier(pl.LightningModule):
    """3D CNN video classifier (clip-level training, multi-view video-level testing).

    Args:
        backbone: preset name for ``gnvideo.models.build_model`` (i3d_r50, slow_r50, r3d_18, tiny_r3d, ...).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        norm: normalization kind (bn, syncbn, frozen_bn, sub_bn, gn, ln, in, bgn).
        norm_options: options of ``build_norm`` (num_groups, channels_per_group, clips_per_group, eps, ...).
        dropout: dropout before the classifier.
        zero_init_residual: zero-init the last norm of each residual block.
        pretrained_2d: path of a 2D (ImageNet) state dict to inflate into the 3D model.
        inflate_mode: "mean" (replicate / T) or "center" (center frame only).
        init_from: a gnvideo ``.ckpt`` or a pytorchvideo checkpoint to start from (weights only).
        label_smoothing: cross-entropy label smoothing.
        base_lr: LR for ``base_batch_size`` clips; scaled linearly with the total batch.
        base_batch_size: clips per optimizer step that ``base_lr`` is meant for (64 in the Non-local recipe).
        clips_per_device: clips per device per forward (linked from ``data.clips_per_device``).
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay.
        exempt_norm_and_bias: no weight decay on norm parameters and biases.
        schedule: "step" (/10 at ``step_milestones``), "cosine", or "constant".
        step_milestones: fractions of the total optimizer steps at which the LR is multiplied by ``step_gamma``.
        step_gamma: LR factor at each milestone.
        warmup_fraction: fraction of the optimizer steps with linear warm-up (0 = none).
        schedule_steps: total optimizer steps of the schedule (None = ``trainer.estimated_stepping_batches``).
        channels_last: model weights and inputs in ``torch.channels_last_3d``.
    """

    def __init__(
        self,
        backbone: str = "i3d_r50",
        num_classes: int = 400,
        norm: str = "bn",
        norm_options: dict | None = None,
        dropout: float = 0.5,
        zero_init_residual: bool = True,
        pretrained_2d: str | None = None,
        inflate_mode: Literal["mean", "center"] = "mean",
        init_from: str | None = None,
        label_smoothing: float = 0.0,
        base_lr: float = 0.01,
        base_batch_size: int = 64,
        clips_per_device: int = 8,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 1e-4,
        exempt_norm_and_bias: bool = True,
        schedule: Literal["step", "cosine", "constant"] = "step",
        step_milestones: tuple[float, ...] = (0.375, 0.75),
        step_gamma: float = 0.1,
        warmup_fraction: float = 0.0,
        schedule_steps: int | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        from gnvideo.models import build_model

        norm_options = dict(norm_options or {})
        try:
            self.model = build_model(backbone, num_classes=num_classes, norm=norm, norm_options=norm_options,
                                     dropout=dropout, zero_init_residual=zero_init_residual)
        except (ValueError, TypeError, KeyError) as e:
            raise ValueError(f"{_config_key(str(e), norm_options)}: {e}") from e
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"model.warmup_fraction: must be in [0, 1), got {warmup_fraction}")
        if any(not 0.0 < m < 1.0 for m in step_milestones):
            raise ValueError(f"model.step_milestones: fractions must be in (0, 1), got {step_milestones}")
        if pretrained_2d:
            from gnvideo.models import inflate_2d_state_dict

            sd = _load_state(pretrained_2d, "model.pretrained_2d")
            sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
            try:
                report = inflate_2d_state_dict(self.model, sd, mode=inflate_mode)
            except ValueError as e:
                raise ValueError(f"model.pretrained_2d ({pretrained_2d}): {e}") from e
            print(f"model.pretrained_2d: inflated {len(report.loaded)} tensors from {pretrained_2d} "
                  f"({len(report.skipped)} skipped, {len(report.missing)} left as initialized)")
        if init_from:
            self._init_from(init_from)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last_3d)
        k5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.train_top5 = MulticlassAccuracy(num_classes, top_k=k5, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=k5, average="micro")
        self.test_views = MultiViewAggregator(num_classes)
        self.predict_views = MultiViewAggregator(num_classes)
        self.test_metrics: dict | None = None
        self._last_time: float | None = None

    def _init_from(self, path: str) -> None:
        ckpt = _load_state(path, "model.init_from")
        if isinstance(ckpt, dict) and "state_dict" in ckpt and any(k.startswith("model.") for k in ckpt["state_dict"]):
            sd = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
            self.model.load_state_dict(sd)
            return
        from gnvideo.models import load_pytorchvideo_checkpoint

        sd = ckpt.get("model_state", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, dict) else ckpt
        try:
            load_pytorchvideo_checkpoint(self.model, sd)
        except (ValueError, KeyError, RuntimeError) as e:
            raise ValueError(f"model.init_from ({path}): {e}") from e

    # ------------------------------------------------------------------ forward
    def forward(self, video: Tensor) -> Tensor:
        """(N, 3, T, H, W) float -> logits (N, num_classes)."""
        if self.hparams.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        return self.model(video)

    @staticmethod
    def _valid_rows(batch: dict) -> Tensor:
        valid = batch.get("valid")
        if valid is None:
            return torch.ones(batch["video"].shape[0], dtype=torch.bool, device=batch["video"].device)
        return valid.to(torch.bool)

    # ------------------------------------------------------------------ train / val
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        x, y = batch["video"], batch["label"]
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.train_top1(logits, y)
        self.train_top5(logits, y)
        n = x.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/top1", self.train_top1, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/top5", self.train_top5, on_step=True, on_epoch=True, batch_size=n)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        now = time.perf_counter()
        if self._last_time is not None:
            clips = batch["video"].shape[0] * self.trainer.world_size
            self.log("train/clips_per_sec", clips / max(now - self._last_time, 1e-9), prog_bar=True)
        self._last_time = now

    def on_train_epoch_start(self) -> None:
        self._last_time = None

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        valid = self._valid_rows(batch)
        if not bool(valid.any()):
            return
        x, y = batch["video"][valid], batch["label"][valid]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        n = x.shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        self.log("val/top1", self.val_top1, prog_bar=True, batch_size=n)
        self.log("val/top5", self.val_top5, batch_size=n)

    # ------------------------------------------------------------------ multi-view test / predict
    def _add_views(self, agg: MultiViewAggregator, batch: dict) -> dict:
        """Softmax of the valid views of ``batch`` added to ``agg``; returns them (video_index (B',), probs (B', K))."""
        valid = self._valid_rows(batch)
        vi = batch["video_index"]
        agg.update_invalid(vi[~valid])
        probs = torch.zeros(0, self.hparams.num_classes)
        if bool(valid.any()):
            probs = self(batch["video"][valid]).float().softmax(dim=1)
            agg.update(probs, vi[valid], batch["label"][valid])
        return {"video_index": vi[valid].cpu(), "probs": probs.detach().cpu()}

    def reduce_device(self) -> torch.device:
        """Where the multi-view reduction's collectives run (the GPU under NCCL, else the CPU)."""
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def on_test_epoch_start(self) -> None:
        self.test_views.reset()
        self.test_metrics = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._add_views(self.test_views, batch)

    def on_test_epoch_end(self) -> None:
        """Video-level metrics over all ranks, logged as ``test/*`` and kept in ``self.test_metrics`` (percent); the
        :class:`gnvideo.callbacks.ResultWriter` writes them to a result file."""
        metrics = video_metrics(self.test_views.reduce(self.reduce_device()), self.hparams.num_classes)
        for k, v in metrics.items():
            self.log(f"test/{k}", float(v), rank_zero_only=True)
        self.test_metrics = metrics

    def on_predict_epoch_start(self) -> None:
        self.predict_views.reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Adds the views to ``self.predict_views`` (the :class:`gnvideo.callbacks.PredictionWriter` writes them)."""
        return self._add_views(self.predict_views, batch)

    # ------------------------------------------------------------------ optimizer
    def total_batch_size(self) -> int:
        """Clips per optimizer step: clips_per_device x world_size x accumulate_grad_batches."""
        t = self.trainer
        return self.hparams.clips_per_device * t.world_size * t.accumulate_grad_batches

    def configure_optimizers(self):
        from gnvideo.models import parameter_groups

        hp = self.hparams
        lr = hp.base_lr * self.total_batch_size() / hp.base_batch_size
        groups = parameter_groups(self.model, hp.weight_decay, exempt_norm_and_bias=hp.exempt_norm_and_bias)
        opt = torch.optim.SGD(groups, lr=lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay)
        total = hp.schedule_steps or self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or total <= 0:
            raise ValueError("trainer.max_steps or trainer.max_epochs must be set: the LR schedule needs the total "
                             f"number of optimizer steps (got {total})")
        total = int(total)
        warmup = int(round(hp.warmup_fraction * total))
        milestones, gamma, schedule = tuple(hp.step_milestones), hp.step_gamma, hp.schedule

        def factor(step: int) -> float:
            return lr_factor(step, total, schedule, milestones, gamma, warmup)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
