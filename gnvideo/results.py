"""One schema for what a run was (its setting) and what its test gave (its result), and where results live.

A result file is JSON: the video-level metrics (percent), the :class:`RunSetting` of the training run, and what the
test itself used (checkpoint, annotation file, split, test views). ``gnvideo test`` writes one file per invocation into
that invocation's run folder (``{default_root_dir}/{run_name}/test_N/results.json``); :func:`new_result_path` never
returns a path that exists, so nothing is overwritten.

The rule the report relies on: ``sub_bn`` with ``k`` clips per group normalizes each group of ``k`` clips on its own,
exactly as BN does on a device holding ``k`` clips, so it counts as BN at ``k`` clips per device
(:meth:`RunSetting.norm_row` and :meth:`RunSetting.clips_per_norm`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["GROUP_FIELDS", "RESULT_GLOB", "TABLE_FIELDS", "RunSetting", "TestResult", "differing_fields", "field_value",
           "group_key", "new_result_path", "read_result", "write_result"]

#: file names :func:`new_result_path` produces (``results.json``, ``results_1.json``, ...).
RESULT_GLOB = "results*.json"


@dataclass(frozen=True)
class RunSetting:
    """Everything that defines a training run, except its seed when grouping (see :data:`GROUP_FIELDS`).

    Attributes:
        backbone: model preset name.
        dataset: name of the dataset (the data root's folder name).
        num_classes: K.
        num_frames: T, frames per clip.
        sampling_rate: frame stride inside a clip.
        clips_per_device: clips per device per forward.
        devices: devices per node.
        num_nodes: nodes.
        accumulate_grad_batches: forwards per optimizer step.
        norm: normalization kind.
        norm_options: options of the norm (num_groups, clips_per_group, ...).
        input_mean: per-channel mean subtracted from [0, 1] pixels.
        input_std: per-channel std the pixels are divided by.
        seed: training seed.
    """

    backbone: str
    dataset: str | None = None
    num_classes: int | None = None
    num_frames: int | None = None
    sampling_rate: int | None = None
    clips_per_device: int | None = None
    devices: int = 1
    num_nodes: int = 1
    accumulate_grad_batches: int = 1
    norm: str = "bn"
    norm_options: dict = field(default_factory=dict)
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    seed: int | None = None

    @classmethod
    def from_dict(cls, d: dict) -> RunSetting:
        """From a result file's ``setting`` (unknown keys are an error naming them; lists become tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"setting: unknown field(s) {unknown}")
        d = dict(d)
        for k in ("input_mean", "input_std"):
            if d.get(k) is not None:
                d[k] = tuple(float(v) for v in d[k])
        d["norm_options"] = dict(d.get("norm_options") or {})
        return cls(**d)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("input_mean", "input_std"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    @property
    def norm_row(self) -> str:
        """The norm a table shows: ``sub_bn`` is per-device BN, so it is ``bn``."""
        return "bn" if self.norm == "sub_bn" else self.norm

    @property
    def clips_per_norm(self) -> int | None:
        """Clips one normalization sees: ``clips_per_group`` for ``sub_bn``, else ``clips_per_device``."""
        if self.norm == "sub_bn" and self.norm_options.get("clips_per_group"):
            return int(self.norm_options["clips_per_group"])
        return self.clips_per_device

    @property
    def clips_per_step(self) -> int | None:
        """Clips per optimizer step: clips_per_device x devices x nodes x accumulation."""
        if self.clips_per_device is None:
            return None
        return self.clips_per_device * self.devices * self.num_nodes * self.accumulate_grad_batches


@dataclass
class TestResult:
    """One ``gnvideo test`` invocation.

    Attributes:
        top1, top5, mean_class_accuracy: video-level accuracies in percent (None when no video was scored).
        videos_scored, videos_skipped: counts.
        setting: the training run's setting.
        test_num_clips, test_num_crops: views per video (clips x crops).
        checkpoint: the tested checkpoint (None: the weights in memory).
        annotation: annotation file of the tested split.
        split: its name ("val" or "test").
        run: the test run's name (``{run_name}/test_N``).
    """

    top1: float | None
    top5: float | None
    mean_class_accuracy: float | None
    videos_scored: int
    videos_skipped: int
    setting: RunSetting
    test_num_clips: int | None = None
    test_num_crops: int | None = None
    checkpoint: str | None = None
    annotation: str | None = None
    split: str | None = None
    run: str | None = None
    path: str | None = field(default=None, compare=False)

    __test__ = False  # tell pytest this is not a test class

    @property
    def num_classes(self) -> int | None:
        return self.setting.num_classes

    @property
    def test_views(self) -> str:
        return f"{self.test_num_clips}x{self.test_num_crops}"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "path"}
        d["setting"] = self.setting.to_dict()
        d["num_classes"] = self.num_classes
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict, path: str | None = None) -> TestResult:
        names = {f.name for f in dataclasses.fields(cls)} | {"num_classes"}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}")
        d = {k: v for k, v in d.items() if k != "num_classes"}
        d["setting"] = RunSetting.from_dict(d.get("setting") or {})
        d["path"] = path if path is not None else d.get("path")
        return cls(**d)


#: what defines a group of runs that may be averaged (only the seed varies inside one): every setting field but the
#: seed, and the test views.
GROUP_FIELDS: tuple[str, ...] = ("backbone", "dataset", "num_classes", "num_frames", "sampling_rate",
                                 "clips_per_device", "devices", "num_nodes", "accumulate_grad_batches", "norm",
                                 "norm_options", "input_mean", "input_std", "test_views")
#: fields one table must share (its rows and columns vary the norm, frames x rate and clips per device).
TABLE_FIELDS: tuple[str, ...] = ("backbone", "dataset", "num_classes", "input_mean", "input_std", "test_views")


def field_value(r: TestResult, name: str) -> Any:
    """Value of a :data:`GROUP_FIELDS` entry of ``r`` (hashable)."""
    if name == "test_views":
        return r.test_views
    value = getattr(r.setting, name)
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else value


def differing_fields(results: list[TestResult], names: tuple[str, ...] = GROUP_FIELDS) -> dict[str, list]:
    """``{field: sorted distinct values}`` for every field of ``names`` that is not the same in all ``results``."""
    out = {}
    for n in names:
        values = {field_value(r, n) for r in results}
        if len(values) > 1:
            out[n] = sorted(values, key=str)
    return out


def group_key(r: TestResult) -> tuple:
    """The complete setting of ``r`` without its seed: results with equal keys may be averaged."""
    return tuple(field_value(r, n) for n in GROUP_FIELDS)


def new_result_path(folder: str | Path, stem: str = "results") -> Path:
    """A file in ``folder`` that did not exist, created empty atomically (``{stem}.json``, ``{stem}_1.json``, ...), so
    two invocations never write the same file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(100000):
        p = folder / (f"{stem}.json" if i == 0 else f"{stem}_{i}.json")
        try:
            fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return p
    raise RuntimeError(f"{folder}: too many results files")


def write_result(result: TestResult, folder: str | Path) -> Path:
    """Write ``result`` to a new file in ``folder``; returns its path (also set on ``result.path``)."""
    path = new_result_path(folder)
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
    result.path = str(path)
    return path


def read_result(path: str | Path) -> TestResult:
    """Read one result file; errors name the file."""
    p = Path(path)
    try:
        return TestResult.from_dict(json.loads(p.read_text()), path=str(p))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON: {e}") from e
    except (TypeError, ValueError) as e:
        raise ValueError(f"{p}: not a gnvideo result: {e}") from e
