"""LightningModule for video classification: model, loss, metrics, multi-view test.

The optimizer recipe (LR scaling with the total batch, parameter groups, schedules) lives in
:mod:`gnvideo.training.optim`, weight loading (ImageNet inflation, fine-tuning from checkpoints) in
:mod:`gnvideo.models.weights`; this module passes its hyperparameters to them.

Batches are dicts from ``gnvideo.data``: ``video`` uint8 (B, T, H, W, 3) as the workers return it (or float
(B, 3, T, H, W), already normalised), ``label`` int64 (B,), ``video_index`` (B,), ``view_index`` (B,), ``valid``
bool (B,), ``flip`` bool (B,), in training ``box_size`` int64 (B,). :meth:`VideoClassifier.on_after_batch_transfer`
turns uint8 video into normalised float32 (B, 3, T, H, W) on the device (enlarging training crops, flipping the
``flip`` rows) with the data module's ``batch_transform``
(:class:`gnvideo.data.transforms.BatchTransform`), so every loop (fit, validate, test, predict, and PreciseBN's
passes, which go through the same hook) sees float input. Test and predict batches on an accelerator arrive as a
video's frames and where its views lie in them (:mod:`gnvideo.data.collate`); the same hook cuts the views there.
Rows with ``valid=False`` are dropped in validation, test and predict; a video
with any invalid view is never scored (see :mod:`gnvideo.evaluation`).
"""

from __future__ import annotations

import warnings
from typing import Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from gnvideo.data.collate import VIEW_KEYS
from gnvideo.data.transforms import BatchTransform
from gnvideo.errors import ConfigError, config_prefix
from gnvideo.evaluation import MultiViewAggregator, video_metrics

__all__ = ["VideoClassifier"]

# Lightning warns whenever the module (and not the data module) defines this hook; here that is the design
warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer` in `LightningModule` but")


class VideoClassifier(pl.LightningModule):
    """3D CNN video classifier (clip-level training, multi-view video-level testing).

    Args:
        backbone: preset name for ``gnvideo.models.build_model`` (i3d_r50, slow_r50, r3d_18, tiny_r3d, ...).
        num_classes: number of classes (linked from ``data.num_classes`` by the CLI).
        norm: normalization kind (bn, syncbn, frozen_bn, sub_bn, gn, ln, in, bgn).
        norm_options: options of ``build_norm`` (num_groups, channels_per_group, clips_per_group, eps, ...).
        dropout: dropout before the classifier.
        zero_init_residual: zero-init the last norm of each residual block.
        pretrained_2d: ImageNet initialization: a source name of ``gnvideo.models.weights.IMAGENET_SOURCES``
            (``torchvision_resnet50`` for BN models, ``timm_resnet50_gn`` for GN models), or the path of a 2D ResNet
            state dict; inflated into the 3D model.
        pretrained_2d_file: a local copy of the named source's weights (no network needed).
        inflate_mode: "mean" (replicate / T) or "center" (center frame only).
        init_from: a gnvideo ``.ckpt``, a state dict, a pytorchvideo checkpoint or a ``.safetensors`` file to
            fine-tune from (read without running code): every tensor whose name and shape match is loaded, the
            classifier keeps its initialization when the class count differs, and what was skipped is printed; a
            file that leaves a stem or stage tensor out is an error (``gnvideo.models.weights``).
        label_smoothing: cross-entropy label smoothing.
        base_lr: LR for ``base_batch_size`` clips; scaled linearly with the total batch.
        base_batch_size: clips per optimizer step that ``base_lr`` is meant for (64 in the Non-local recipe).
        clips_per_device: clips per device per forward (linked from ``data.clips_per_device``).
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: L2 weight decay.
        no_weight_decay: parameters without weight decay: "norm" (norm layers; the Non-local recipe, whose fc bias
            is decayed), "norm_and_bias" (also every bias), "none" (see ``gnvideo.training.optim``).
        schedule: "step" (/10 at ``step_milestones``), "cosine", or "constant".
        step_milestones: fractions of the total optimizer steps at which the LR is multiplied by ``step_gamma``.
        step_gamma: LR factor at each milestone.
        warmup_fraction: fraction of the optimizer steps with linear warm-up (0 = none).
        schedule_steps: total optimizer steps of the schedule (None = ``trainer.estimated_stepping_batches``).
        channels_last: model weights and inputs in ``torch.channels_last_3d``.
        head_pool: "global" average pooling, or "local": the pytorchvideo / Non-local head (average-pool
            (T', 7, 7) with stride 1, classify each position, average); see ``gnvideo.models.resnet3d``.
        head_pool_size: (H, W) window of the "local" head, in res5 positions.
        train_clips: length of the schedule in clips (400k x 64 = 25.6M in the Non-local recipe); sets
            ``trainer.max_steps`` to ``train_clips / total batch`` unless ``trainer.max_steps`` is given.
        test_clips_per_forward: views per forward in test and predict (None: ``clips_per_device``). No activations
            are kept there, so more fit than in training; one forward of a video's views instead of one per clip
            matters on a CPU at 1 clip per device (a batch of 1 takes torch's slow 3D convolution).
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
        pretrained_2d_file: str | None = None,
        inflate_mode: Literal["mean", "center"] = "mean",
        init_from: str | None = None,
        label_smoothing: float = 0.0,
        base_lr: float = 0.01,
        base_batch_size: int = 64,
        clips_per_device: int = 8,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 1e-4,
        no_weight_decay: Literal["norm", "norm_and_bias", "none"] = "norm_and_bias",
        schedule: Literal["step", "cosine", "constant"] = "step",
        step_milestones: tuple[float, ...] = (0.375, 0.75),
        step_gamma: float = 0.1,
        warmup_fraction: float = 0.0,
        schedule_steps: int | None = None,
        channels_last: bool = False,
        head_pool: Literal["global", "local"] = "global",
        head_pool_size: tuple[int, int] = (7, 7),
        train_clips: int | None = None,
        test_clips_per_forward: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        with config_prefix("model."):  # settings are checked where they are used; their keys are model.<name>
            self.configure_models()
            from gnvideo.models.weights import check_init_options
            from gnvideo.training.optim import check_schedule

            check_schedule(schedule, step_milestones, warmup_fraction)
            if test_clips_per_forward is not None and test_clips_per_forward < 1:
                raise ConfigError("test_clips_per_forward", f"must be >= 1, got {test_clips_per_forward}")
            check_init_options(norm, pretrained_2d, pretrained_2d_file, init_from)  # loading waits for the run
        self._weights_ready = not (pretrained_2d or init_from)
        self.configure_metrics()
        #: uint8 -> float transform of the input; None = the attached data module's ``batch_transform``
        self.batch_transform: BatchTransform | None = None

    def configure_models(self) -> None:
        """``self.model``: the network of the ``backbone`` preset with its norm and head settings, channels-last if
        asked. (Not Lightning's ``configure_model`` hook, which the Trainer calls again at every fit.)"""
        from gnvideo.models import build_model

        hp = self.hparams
        model = build_model(hp.backbone, num_classes=hp.num_classes, norm=hp.norm,
                            norm_options=dict(hp.norm_options or {}), dropout=hp.dropout,
                            zero_init_residual=hp.zero_init_residual, head_pool=hp.head_pool,
                            head_pool_size=hp.head_pool_size)
        self.model = model.to(memory_format=torch.channels_last_3d) if hp.channels_last else model

    def configure_metrics(self) -> None:
        """Clip-level top-1/top-5 for train and val (torchmetrics); video-level aggregators for test and predict."""
        num_classes = self.hparams.num_classes
        k5 = min(5, num_classes)
        self.train_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.train_top5 = MulticlassAccuracy(num_classes, top_k=k5, average="micro")
        self.val_top1 = MulticlassAccuracy(num_classes, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes, top_k=k5, average="micro")
        self.test_views = MultiViewAggregator(num_classes)
        self.predict_views = MultiViewAggregator(num_classes)
        self.test_metrics: dict | None = None  # set by each test epoch; written by callbacks.RunRecorder

    # ------------------------------------------------------------------ forward
    def forward(self, video: Tensor) -> Tensor:
        """(N, 3, T, H, W) float -> logits (N, num_classes)."""
        if self.hparams.channels_last:
            video = video.contiguous(memory_format=torch.channels_last_3d)
        return self.model(video)

    # ------------------------------------------------------------------ input
    def _input_transform(self) -> BatchTransform:
        if self.batch_transform is not None:
            return self.batch_transform
        dm = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        transform = getattr(dm, "batch_transform", None)
        if transform is None:
            raise RuntimeError("uint8 video batch but no BatchTransform: use KineticsDataModule or set "
                               "module.batch_transform = gnvideo.data.transforms.BatchTransform(mean, std)")
        return transform

    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        """uint8 ``video`` (B, T, H, W, 3) on the device -> float32 (B, 3, T, H, W) ``(x / 255 - mean) / std``,
        the ``box_size`` boxes of training clips enlarged to the crop, ``flip`` rows mirrored along W; float video is
        left as it is. A test batch's ``frames`` become its views' ``video`` (V, 3, T, vh, vw), cut here."""
        if isinstance(batch, dict) and isinstance(batch.get("frames"), Tensor):
            views = self._input_transform().views(*(batch[k] for k in VIEW_KEYS))
            batch = {k: v for k, v in batch.items() if k not in VIEW_KEYS}
            batch["video"] = views
        elif isinstance(batch, dict) and isinstance(batch.get("video"), Tensor) and batch["video"].dtype == torch.uint8:
            batch = dict(batch)
            batch["video"] = self._input_transform()(batch["video"], batch.get("flip"), batch.get("box_size"))
        return batch

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
        return loss

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
            step = self.hparams.get("test_clips_per_forward") or max(int(self.hparams.clips_per_device), 1)
            x = batch["video"][valid]  # a batch of whole videos
            probs = torch.cat([self(x[i:i + step]).float().softmax(dim=1) for i in range(0, x.shape[0], step)])
            agg.update(probs, vi[valid], batch["label"][valid])
        return {"video_index": vi[valid].cpu(), "probs": probs.detach().cpu()}

    def _reduce_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def on_test_epoch_start(self) -> None:
        self.test_views.reset()

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._add_views(self.test_views, batch)

    def on_test_epoch_end(self) -> None:
        """Video-level metrics over all ranks, logged as ``test/*`` and kept in ``test_metrics`` for the writers."""
        metrics = video_metrics(self.test_views.reduce(self._reduce_device()), self.hparams.num_classes)
        for k, v in metrics.items():
            self.log(f"test/{k}", float(v), rank_zero_only=True)
        self.test_metrics = metrics

    def on_predict_epoch_start(self) -> None:
        self.predict_views.reset()

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._add_views(self.predict_views, batch)

    # ------------------------------------------------------------------ initial weights
    def load_initial_weights(self) -> None:
        """Load ``pretrained_2d`` / ``init_from`` into the model (once; a restored checkpoint counts as loaded).

        Runs at the start of fit, validate, test and predict unless a checkpoint was restored (``--ckpt_path``,
        ``load_from_checkpoint``), so resuming or evaluating never needs the ImageNet weights; call it yourself
        when using the module outside a Trainer.
        """
        if self._weights_ready:
            return
        from gnvideo.models.weights import initialize

        hp = self.hparams
        with config_prefix("model."):
            initialize(self.model, hp.norm, hp.pretrained_2d, hp.pretrained_2d_file, hp.inflate_mode, hp.init_from,
                       prefix="model.")
        self._weights_ready = True

    def on_validation_start(self) -> None:
        self.load_initial_weights()

    def on_test_start(self) -> None:
        self.load_initial_weights()

    def on_predict_start(self) -> None:
        self.load_initial_weights()

    def on_fit_start(self) -> None:
        self.load_initial_weights()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._weights_ready = True  # the checkpoint's weights replace any initialization

    # ------------------------------------------------------------------ optimizer
    def total_batch_size(self) -> int:
        """Clips per optimizer step: clips_per_device x world_size x accumulate_grad_batches."""
        t = self.trainer
        return self.hparams.clips_per_device * t.world_size * t.accumulate_grad_batches

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.hparams.train_clips:
            from gnvideo.training.optim import steps_for_clips

            with config_prefix("model."):
                steps = steps_for_clips(self.hparams.train_clips, self.total_batch_size())
            if self.trainer.max_steps in (-1, None):
                self.trainer.fit_loop.epoch_loop.max_steps = steps
                print(f"model.train_clips: {self.hparams.train_clips} clips / {self.total_batch_size()} per step "
                      f"= {steps} optimizer steps (trainer.max_steps)")
            elif self.trainer.max_steps != steps:
                print(f"model.train_clips: trainer.max_steps {self.trainer.max_steps} given, used instead of "
                      f"{steps} from {self.hparams.train_clips} clips")

    def configure_optimizers(self):
        from gnvideo.training.optim import build_optimizer, scaled_lr

        hp = self.hparams
        return build_optimizer(
            self.model, scaled_lr(hp.base_lr, self.total_batch_size(), hp.base_batch_size),
            hp.schedule_steps or self.trainer.estimated_stepping_batches, momentum=hp.momentum, nesterov=hp.nesterov,
            weight_decay=hp.weight_decay, no_weight_decay=hp.no_weight_decay, schedule=hp.schedule,
            step_milestones=hp.step_milestones, step_gamma=hp.step_gamma, warmup_fraction=hp.warmup_fraction)
