"""The optimizer recipe: LR scaling with the total batch, parameter groups, LR schedules.

The paper recipe is the Non-local networks' Kinetics solver (Wang et al., 2018; facebookresearch/video-nonlocal-net,
config ``DBG_kinetics_resnet_8gpu_c2d_nonlocal_400k.yaml``), which the Group Normalization paper used for Table 8:

- SGD, momentum 0.9, **Nesterov**, base LR 0.01 for a total batch of 64 clips (8 GPUs x 8), weight decay 1e-4;
- weight decay 0 on the norm layers' scale and shift (``WEIGHT_DECAY_BN: 0.0``; the rule there is by name, every
  parameter with ``_bn`` in it). Every other parameter is decayed, **including the classifier's bias** (``pred_b``,
  the only bias of that network: its convs have none). That is ``no_weight_decay="norm"`` here;
  ``"norm_and_bias"`` also exempts every bias (a common modern choice), ``"none"`` decays everything;
- 400k iterations, LR x0.1 after 150k and after 300k (37.5 % and 75 % of the steps), no warm-up.
  ``SCALE_MOMENTUM`` there rescales the momentum history when the LR changes, because Caffe2 keeps ``lr * grad`` in
  it; ``torch.optim.SGD`` keeps the plain gradient history and applies the LR afterwards, which is the same thing.

The LR is ``base_lr * total_batch / base_batch_size`` with ``total_batch = clips_per_device x world_size x
accumulate_grad_batches`` (linear scaling; Goyal et al., 2017).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from gnvideo.errors import ConfigError
from gnvideo.models.norms import is_norm_layer

NoDecay = Literal["norm", "norm_and_bias", "none"]
SCHEDULES = ("step", "cosine", "constant")

__all__ = ["SCHEDULES", "build_optimizer", "check_schedule", "lr_factor", "parameter_groups", "scaled_lr",
           "steps_for_clips"]


def scaled_lr(base_lr: float, total_batch: int, base_batch_size: int = 64) -> float:
    """Linear scaling: LR for ``total_batch`` clips per optimizer step, ``base_lr`` being for ``base_batch_size``."""
    if total_batch < 1 or base_batch_size < 1:
        raise ValueError(f"batch sizes must be >= 1, got total_batch={total_batch}, base_batch_size={base_batch_size}")
    return base_lr * total_batch / base_batch_size


def steps_for_clips(train_clips: int, total_batch: int) -> int:
    """Optimizer steps that see ``train_clips`` clips at ``total_batch`` clips per step (rounded to nearest)."""
    if train_clips < 1 or total_batch < 1:
        raise ConfigError("train_clips", f"need train_clips >= 1 and a total batch >= 1, got {train_clips}, "
                          f"{total_batch}")
    return max(1, round(train_clips / total_batch))


def lr_factor(step: int, total: int, schedule: str, milestones: Sequence[float] = (0.375, 0.75), gamma: float = 0.1,
              warmup_steps: int = 0, warmup_start: float = 0.01) -> float:
    """Multiplier of the peak LR at optimizer step ``step`` of ``total``.

    ``step``: ``gamma ** (number of milestones m with step >= round(m * total))``; ``cosine``: half-cosine from 1 to 0
    after the warm-up; ``constant``: 1. A linear warm-up from ``warmup_start`` to 1 over ``warmup_steps`` comes first.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start + (1.0 - warmup_start) * step / warmup_steps
    if schedule == "step":
        return gamma ** sum(step >= round(m * total) for m in milestones)
    if schedule == "cosine":
        span = max(1, total - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    return 1.0


def parameter_groups(model: nn.Module, weight_decay: float, no_weight_decay: NoDecay = "norm") -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed optimizer group.

    Args:
        model: any module.
        weight_decay: decay of the regular group.
        no_weight_decay: "norm" (norm-layer parameters exempt, as the Non-local recipe), "norm_and_bias" (also every
            bias), "none" (one group, everything decayed).

    Returns:
        ``[{"params": [...], "weight_decay": weight_decay, "name": "decay"},
        {"params": [...], "weight_decay": 0.0, "name": "no_decay"}]`` (empty groups left out).
    """
    if no_weight_decay not in ("norm", "norm_and_bias", "none"):
        raise ValueError(f"no_weight_decay must be 'norm', 'norm_and_bias' or 'none', got {no_weight_decay!r}")
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        norm = is_norm_layer(module)
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            exempt = no_weight_decay != "none" and (norm or (no_weight_decay == "norm_and_bias" and name == "bias"))
            (no_decay if exempt else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def check_schedule(schedule: str, step_milestones: Sequence[float], warmup_fraction: float) -> None:
    """Check the schedule options (before training starts).

    Raises:
        ConfigError: key ``schedule``, ``step_milestones`` or ``warmup_fraction``.
    """
    if schedule not in SCHEDULES:
        raise ConfigError("schedule", f"must be one of {SCHEDULES}, got {schedule!r}")
    if not 0.0 <= warmup_fraction < 1.0:
        raise ConfigError("warmup_fraction", f"must be in [0, 1), got {warmup_fraction}")
    if any(not 0.0 < m < 1.0 for m in step_milestones):
        raise ConfigError("step_milestones", f"fractions must be in (0, 1), got {tuple(step_milestones)}")


def build_optimizer(
    model: nn.Module,
    lr: float,
    total_steps: float,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 1e-4,
    no_weight_decay: NoDecay = "norm",
    schedule: str = "step",
    step_milestones: Sequence[float] = (0.375, 0.75),
    step_gamma: float = 0.1,
    warmup_fraction: float = 0.0,
) -> dict:
    """SGD and a per-step ``LambdaLR`` in the dict form ``LightningModule.configure_optimizers`` returns.

    Args:
        model: the network.
        lr: peak LR (already scaled with the total batch, ``scaled_lr``).
        total_steps: optimizer steps of the whole schedule.
        momentum, nesterov, weight_decay, no_weight_decay: SGD settings and the decay exemption
            (``parameter_groups``).
        schedule: one of ``SCHEDULES``; ``step_milestones`` (fractions of ``total_steps``) and ``step_gamma`` for
            "step"; ``warmup_fraction`` of the steps with linear warm-up.

    Raises:
        ConfigError: ``total_steps`` is not a finite positive number (no ``max_steps`` / ``max_epochs``), or a bad
            schedule argument (:func:`check_schedule`); the key names the option.
    """
    check_schedule(schedule, step_milestones, warmup_fraction)
    if not math.isfinite(total_steps) or total_steps <= 0:
        raise ConfigError("trainer.max_steps", "trainer.max_steps or trainer.max_epochs must be set: the LR schedule "
                          f"needs the total number of optimizer steps (got {total_steps})")
    groups = parameter_groups(model, weight_decay, no_weight_decay)
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    total = int(total_steps)
    warmup = int(round(warmup_fraction * total))
    milestones = tuple(step_milestones)

    def factor(step: int) -> float:
        return lr_factor(step, total, schedule, milestones, step_gamma, warmup)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    # the scheduler name prefixes LearningRateMonitor's keys: train/lr/decay, train/lr/no_decay
    return {"optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1, "name": "train/lr"}}
