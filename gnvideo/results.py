"""One schema for what a run was and what its test gave: written by the callbacks, read by the demo and the report.

A result file (``results.json``, or ``results-N.json`` when a folder already has one: a result is never overwritten)
holds a :class:`TestResult`: video-level metrics in percent, the test inputs (checkpoint, annotation file, split,
views) and the training :class:`RunSetting` stored in the checkpoint. ``gnvideo test`` writes it in the test run's own
folder (``runs/<name>/test_N/``), so every test invocation has its own file.

The rule that makes simulated devices comparable: ``sub_bn`` with ``clips_per_group = k`` normalizes each group of
``k`` clips on its own, which is per-device BN at ``k`` clips per device; :func:`clips_per_norm` gives that batch and
:func:`norm_row` puts the run in the BN row. A backbone with non-local blocks gets a row of its own,
:func:`report_row_of` (``bn + NL5``), apart from the same norm without them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gnvideo.models.norms import report_row

__all__ = ["RESULT_GLOB", "RunSetting", "TestResult", "clips_per_norm", "comparison_key", "load_results",
           "new_result_path", "nonlocal_tag", "norm_row", "report_row_of", "setting_from_run", "write_result"]

RESULT_GLOB = "results*.json"


@dataclass
class RunSetting:
    """What a training run was (stored in its checkpoints; every field but ``seed`` separates report groups).

    Attributes:
        backbone: model preset (i3d_r50, tiny_r3d, ...).
        dataset: dataset root folder the model was trained on.
        train_annotation: training annotation file (None: the dataset's default).
        num_classes: classes of the classifier.
        num_frames: frames per clip (T).
        sampling_rate: frame stride of a clip.
        train_crop_size: training crop side in pixels (``data.train_crop_size``).
        clips_per_device: clips per device per forward.
        devices: devices per node.
        num_nodes: nodes.
        accumulate_grad_batches: forwards per optimizer step.
        norm: normalization kind as configured (``sub_bn`` stays ``sub_bn`` here).
        norm_options: its options (num_groups, clips_per_group, ...).
        pretrained_2d: ImageNet source name or file (None: random init).
        init_from: checkpoint fine-tuned from (None: none).
        head_pool: classifier head pooling ("global" or "local").
        mean: per-channel input mean (RGB, 0-1 scale).
        std: per-channel input std (RGB, 0-1 scale).
        seed: training seed (the only field the report averages over).
        nonlocal_blocks: non-local blocks in the backbone (0: none).
        nonlocal_instantiation: their kind ("embedded_gaussian" or "dot_product"), None without blocks.
    """

    backbone: str
    dataset: str | None = None
    train_annotation: str | None = None
    num_classes: int | None = None
    num_frames: int | None = None
    sampling_rate: int | None = None
    train_crop_size: int | None = None
    clips_per_device: int | None = None
    devices: int = 1
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    norm: str = "bn"
    norm_options: dict = field(default_factory=dict)
    pretrained_2d: str | None = None
    init_from: str | None = None
    head_pool: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    seed: int | None = None
    nonlocal_blocks: int = 0
    nonlocal_instantiation: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> RunSetting:
        """Setting from a stored dict; unknown keys are ignored, missing ones keep their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "crop_size" in d and "train_crop_size" not in d:  # stored before data.train_crop_size had its name
            d = {**d, "train_crop_size": d["crop_size"]}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TestResult:
    """One test invocation: metrics (percent), what was tested and how, and the training setting.

    Attributes:
        top1: video-level top-1 (%), None when no video was scored.
        top5: video-level top-5 (%).
        mean_class_accuracy: mean over classes of per-class top-1 (%).
        videos_scored: videos with every view decoded.
        videos_skipped: videos with an unreadable view (never scored).
        num_classes: classes of the model.
        checkpoint: checkpoint tested (None: the weights in memory).
        annotation: annotation file of the scored split.
        split: the scored split's name (e.g. "val", "test").
        test_views: how views were made: num_clips, num_crops, view ("crops" or "full_frame"), crop sizes.
        setting: the training setting (a :class:`RunSetting` as a dict).
        test_run: the test run's folder name (``test_N`` or the fit run's ``version_N``).
    """

    top1: float | None
    top5: float | None
    mean_class_accuracy: float | None
    videos_scored: int
    videos_skipped: int
    num_classes: int
    checkpoint: str | None
    annotation: str | None
    split: str | None
    test_views: dict
    setting: dict
    test_run: str | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def clips_per_norm(setting: dict) -> int:
    """Clips one normalization sees: ``norm_options.clips_per_group`` for ``sub_bn``, else ``clips_per_device``."""
    opts = setting.get("norm_options") or {}
    if setting.get("norm") == "sub_bn" and opts.get("clips_per_group"):
        return int(opts["clips_per_group"])
    return int(setting.get("clips_per_device") or 0)


def norm_row(setting: dict) -> str:
    """Report row of a run: its norm family (``sub_bn`` -> ``bn``)."""
    return report_row(str(setting.get("norm", "?")))


def nonlocal_tag(setting: dict) -> str:
    """"" for a backbone without non-local blocks, else ``NL<count>`` (``NL5``; ``NL5 dot`` for dot-product blocks).

    A setting stored before ``RunSetting`` recorded the blocks takes them from its backbone preset.
    """
    count, kind = setting.get("nonlocal_blocks"), setting.get("nonlocal_instantiation")
    if count is None:
        from gnvideo.models.presets import PRESETS  # imports torch: only for old result files

        preset = PRESETS.get(str(setting.get("backbone")), {})
        count = sum(len(stage) for stage in preset.get("nonlocal_blocks") or ())
        kind = preset.get("nonlocal_instantiation", "embedded_gaussian")
    if not count:
        return ""
    return f"NL{int(count)}" + (" dot" if kind == "dot_product" else "")


def report_row_of(setting: dict) -> str:
    """Report row of a run: :func:`norm_row`, joined by `` + `` with the :func:`nonlocal_tag` when there is one."""
    tag = nonlocal_tag(setting)
    return norm_row(setting) + (f" + {tag}" if tag else "")


#: Setting fields that separate otherwise equal runs without being the table's rows or columns.
_CONTEXT_FIELDS = ("backbone", "dataset", "train_annotation", "num_classes", "sampling_rate",
                   "train_crop_size", "pretrained_2d", "init_from", "head_pool", "mean", "std", "norm", "norm_options",
                   "clips_per_device", "devices", "num_nodes", "accumulate_grad_batches")


def comparison_key(result: dict) -> dict[str, Any]:
    """Every field of a result that must be equal for two results to be averaged (all but the seed).

    Covers the training setting (backbone and its non-local blocks, dataset and class count, frames x sampling rate,
    clips per device, devices x accumulation, norm and options, initialization, head, input normalization), the test
    views and the scored annotation file.
    """
    s = result.get("setting") or {}
    key: dict[str, Any] = {f: s.get(f) for f in _CONTEXT_FIELDS}
    if key["train_crop_size"] is None:  # results written before the option was named data.train_crop_size
        key["train_crop_size"] = s.get("crop_size")
    key["num_frames"] = s.get("num_frames")
    key["nonlocal"] = nonlocal_tag(s)  # settings stored before the field existed: from the backbone preset
    key["test_views"] = result.get("test_views") or s.get("test_views")
    key["test_annotation"] = result.get("annotation")
    return key


def setting_from_run(trainer, module, datamodule=None) -> RunSetting:
    """The :class:`RunSetting` of a Lightning run (module hparams, data-module hparams, trainer topology)."""
    import os

    hp = dict(getattr(module, "hparams", {}) or {})
    dm = datamodule if datamodule is not None else getattr(trainer, "datamodule", None)
    dh = dict(getattr(dm, "hparams", {}) or {})
    seed = os.environ.get("PL_GLOBAL_SEED", dh.get("seed"))

    def listed(v):
        return [float(x) for x in v] if v is not None else None

    from gnvideo.models.nonlocal_block import NonLocal3d

    model = getattr(module, "model", None)
    blocks = [m for m in model.modules() if isinstance(m, NonLocal3d)] if model is not None else []

    return RunSetting(
        backbone=str(hp.get("backbone")), dataset=dh.get("root"),
        train_annotation=getattr(dm, "train_annotation", dh.get("train_annotation")),
        num_classes=hp.get("num_classes"), num_frames=dh.get("num_frames"), sampling_rate=dh.get("sampling_rate"),
        train_crop_size=dh.get("train_crop_size"),
        clips_per_device=hp.get("clips_per_device", dh.get("clips_per_device")),
        devices=int(trainer.num_devices), num_nodes=int(trainer.num_nodes),
        accumulate_grad_batches=int(trainer.accumulate_grad_batches), norm=str(hp.get("norm")),
        norm_options=dict(hp.get("norm_options") or {}), pretrained_2d=hp.get("pretrained_2d"),
        init_from=hp.get("init_from"), head_pool=hp.get("head_pool"), mean=listed(dh.get("mean")),
        std=listed(dh.get("std")), seed=int(seed) if seed is not None else None, nonlocal_blocks=len(blocks),
        nonlocal_instantiation=blocks[0].instantiation if blocks else None)


def new_result_path(folder: str | Path) -> Path:
    """``folder/results.json``, or ``results-N.json`` with the first free N: an earlier result is never replaced."""
    folder = Path(folder)
    path, n = folder / "results.json", 1
    while path.exists():
        path, n = folder / f"results-{n}.json", n + 1
    return path


def write_result(result: TestResult, folder: str | Path) -> Path:
    """Write ``result`` to a new file in ``folder`` (created exclusively, so two writers never share one)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result.to_dict(), indent=2) + "\n"
    while True:
        path = new_result_path(folder)
        try:
            with open(path, "x") as f:
                f.write(text)
            return path
        except FileExistsError:  # another process took that name between the check and the open
            continue


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Read result files: each path is a file or a folder searched recursively for ``results*.json``.

    Returns:
        The result dicts, each with ``path`` added.

    Raises:
        FileNotFoundError: a path does not exist, or no result file was found anywhere.
        ValueError: a file is not valid JSON or lacks ``top1``/``setting``.
    """
    paths = list(paths)
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"report: {p} does not exist")
        files.extend([p] if p.is_file() else sorted(p.rglob(RESULT_GLOB)))
    if not files:
        raise FileNotFoundError(f"report: no results.json under {', '.join(map(str, paths))}")
    out = []
    for f in files:
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"report: {f} is not valid JSON: {e}") from e
        if not isinstance(r, dict) or "top1" not in r or "setting" not in r:
            raise ValueError(f"report: {f} lacks 'top1' or 'setting'")
        r.setdefault("path", str(f))
        out.append(r)
    return out
