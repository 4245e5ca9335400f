"""Reading checkpoint and weights files without running code, and the conversion of a trusted file that needs more.

Every checkpoint or weights file gnvideo reads (``model.init_from``, ``model.pretrained_2d_file``,
``model.pretrained_2d`` as a path, ``--ckpt_path`` and the class names ``predict`` takes from it, pytorchvideo
imports) goes through :func:`read_checkpoint`:

- a PyTorch file (``torch.save``: ``.ckpt``, ``.pth``, ``.pt``, ``.pyth``, ``.bin``; zip or legacy format) is read
  with ``torch.load(weights_only=True)``, whose unpickler rebuilds tensors and plain Python types (dict, list, tuple,
  str, numbers, None, ``OrderedDict``, ``torch.Size``, dtypes) and nothing else. A pickle that names any other
  function or class (which a full unpickle would call, a shell command included) is refused before any of it runs;
- a ``.safetensors`` file holds no pickle at all (read with the ``safetensors`` package, which timm depends on).

Which format a file is comes from its first bytes, not its name. A refused, empty, truncated or foreign file raises
:class:`CheckpointError` with one line naming the setting and the file. gnvideo's own checkpoints hold only tensors
and plain types, so they always load (``tests/training/test_cli_train.py``). A file the user trusts that needs a full
unpickle is converted once, on purpose, by ``gnvideo convert-weights FILE OUT.safetensors``
(:func:`convert_to_safetensors`); gnvideo itself never unpickles in full.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gnvideo.errors import ConfigError

__all__ = [
    "CheckpointError",
    "WeightsError",
    "check_checkpoint",
    "convert_to_safetensors",
    "file_format",
    "read_checkpoint",
    "unwrap_state_dict",
]

_ZIP_MAGIC = b"PK\x03\x04"
#: ``torch.save(..., _use_new_zipfile_serialization=False)`` starts with this pickled magic number
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_NAMED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|[Uu]nsupported class ([\w.]+)")


class WeightsError(ConfigError):
    """Weights could not be had from the file or source a setting names (``key``: the setting, in the words of the
    code that raises; callers prefix it, e.g. ``model.init_from``)."""


class CheckpointError(WeightsError):
    """A file given as a checkpoint is missing, empty, damaged, not a checkpoint, or would need a full unpickle."""


def file_format(path: str | os.PathLike) -> str:
    """"torch" (zip), "torch_legacy", "safetensors", "empty" or "unknown", from the first bytes of the file."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "empty"
    if head.startswith(_ZIP_MAGIC):
        return "torch"
    if head.startswith(_LEGACY_MAGIC):
        return "torch_legacy"
    if len(head) > 8 and head[8:9] == b"{":  # safetensors: u64 little-endian header size, then the JSON header
        return "safetensors"
    return "unknown"


def _cause(e: BaseException) -> str:
    """The first sentence of an exception's first line, as ``Type: text``."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.split(". ")[0].rstrip(".")
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def _convert_hint(p: Path) -> str:
    out = p.with_suffix(".safetensors")
    return f"if you trust the file, convert it once with 'gnvideo convert-weights {p} {out}' and give that file"


def _checked_format(p: Path, key: str) -> str:
    """The format of an existing, non-empty checkpoint file (``file_format``); raises for anything else."""
    if p.is_dir():
        raise CheckpointError(key, f"{p} is a folder, not a checkpoint file")
    if not p.is_file():
        raise CheckpointError(key, f"file {p} does not exist")
    kind = file_format(p)
    if kind == "empty":
        raise CheckpointError(key, f"{p} is empty (0 bytes), not a checkpoint")
    if kind == "unknown":
        with open(p, "rb") as f:
            pickled = f.read(1) == b"\x80"
        what = "a plain Python pickle (not written by torch.save), which gnvideo never unpickles" if pickled else \
            "neither a PyTorch checkpoint (torch.save) nor a safetensors file"
        raise CheckpointError(key, f"{p} is {what}")
    if kind == "torch":
        _check_zip(p, key)
    return kind


def _check_zip(p: Path, key: str) -> None:
    """A zip file is a ``torch.save`` checkpoint: complete, with a ``data.pkl``, and not a TorchScript program."""
    try:
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(key, f"{p} is truncated or damaged: it starts as a zip archive (torch.save) but its "
                                   f"directory is missing or broken") from e
    if any(n.endswith("/constants.pkl") for n in names):
        raise CheckpointError(key, f"{p} is a TorchScript program (torch.jit.save), not a checkpoint: save its "
                                   f"state_dict() with torch.save instead")
    if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        raise CheckpointError(key, f"{p} is a zip archive without data.pkl, not a PyTorch checkpoint")


def read_checkpoint(path: str | os.PathLike, key: str, mmap: bool = False) -> Any:
    """Load a checkpoint or weights file on the CPU without running code from it.

    Args:
        path: a PyTorch file (zip or legacy ``torch.save`` format) or a ``.safetensors`` file.
        key: the setting that names the file, for messages (``init_from``, ``ckpt_path``).
        mmap: memory-map the tensors of a zip-format file instead of reading them (for reading metadata only).

    Returns:
        What was saved: a dict of tensors for safetensors; for a PyTorch file its object of tensors and plain types.

    Raises:
        CheckpointError: no such file, empty, truncated or damaged, not a checkpoint, or a pickle that names
            functions or classes beyond tensors and plain types (refused; the message says how to convert it).
    """
    p = Path(path)
    kind = _checked_format(p, key)
    if kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise CheckpointError(key, f"{p} is a safetensors file: pip install safetensors to read it") from e
        try:
            return load_file(str(p))
        except Exception as e:  # noqa: BLE001 - the reader's own errors (SafetensorError, OSError) say what is wrong
            raise CheckpointError(key, f"{p} is a truncated or damaged safetensors file ({_cause(e)})") from e
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on the way to its own error
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap and kind == "torch")
    except pickle.UnpicklingError as e:
        if "truncated" in str(e) or "ran out of input" in str(e).lower():
            raise CheckpointError(key, f"{p} is truncated or damaged ({_cause(e)})") from e
        named = _NAMED_GLOBAL.search(str(e))
        what = (named.group(1) or named.group(2)) if named else "Python objects"
        raise CheckpointError(key, f"{p} is refused: its pickle names {what}, beyond tensors and plain types, and "
                                   f"only a full unpickle, which can run code, would rebuild it; "
                                   f"{_convert_hint(p)}") from e
    except Exception as e:  # noqa: BLE001 - zip, storage and EOF errors all mean the file is cut short or damaged
        raise CheckpointError(key, f"{p} is truncated or damaged ({_cause(e)})") from e


def check_checkpoint(path: str | os.PathLike, key: str) -> None:
    """Raise what :func:`read_checkpoint` would raise for ``path``, reading as little as it can: the header of a
    safetensors file, the pickle of a zip-format file (its tensors memory-mapped, not read)."""
    p = Path(path)
    if _checked_format(p, key) != "safetensors":
        read_checkpoint(p, key, mmap=True)
        return
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            f.keys()
    except ImportError as e:
        raise CheckpointError(key, f"{p} is a safetensors file: pip install safetensors to read it") from e
    except Exception as e:  # noqa: BLE001 - see read_checkpoint
        raise CheckpointError(key, f"{p} is a truncated or damaged safetensors file ({_cause(e)})") from e


def unwrap_state_dict(obj: Any, key: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model tensors of a checkpoint object.

    Accepts a plain state dict, a Lightning checkpoint (``state_dict`` with ``model.`` prefixes, as gnvideo's
    ``VideoClassifier`` saves), a PySlowFast / pytorchvideo model-zoo dict (``model_state``), ``{"model": ...}``, and
    removes a DDP ``module.`` prefix.

    Raises:
        CheckpointError: ``obj`` is not a mapping, or holds no tensors (names ``key``).
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(key, f"expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    for name in ("state_dict", "model_state", "model"):
        if name in obj and isinstance(obj[name], Mapping):
            obj = obj[name]
            break
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(key, "the checkpoint holds no tensors")
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
        elif prefix == "model." and any(k.startswith(prefix) for k in sd):  # Lightning: model.* plus metric states
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def convert_to_safetensors(source: str | os.PathLike, target: str | os.PathLike) -> int:
    """Write the model tensors of a file you trust to a ``.safetensors`` file (tensors only, no code).

    This is the one place that unpickles in full (``torch.load(weights_only=False)``): the file may run code while
    it is read, which is why gnvideo never does this by itself. Only the model's state dict is kept (as
    :func:`unwrap_state_dict` finds it), so the result serves ``init_from``, ``pretrained_2d`` and
    ``pretrained_2d_file``, not ``--ckpt_path``.

    Returns:
        The number of tensors written.

    Raises:
        CheckpointError: ``target`` exists or is not a ``.safetensors`` name, or ``source`` holds no tensors.
    """
    src, dst = Path(source), Path(target)
    if dst.suffix != ".safetensors":
        raise CheckpointError("target", f"{dst}: the converted file's name must end in .safetensors")
    if dst.exists():
        raise CheckpointError("target", f"{dst} exists; give a new name")
    from safetensors.torch import save_file

    if _checked_format(src, "source") == "safetensors":
        obj = read_checkpoint(src, "source")
    else:
        try:
            obj = torch.load(src, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any reader error: the file is damaged
            raise CheckpointError("source", f"{src} is truncated or damaged ({_cause(e)})") from e
    sd = unwrap_state_dict(obj, "source")
    # safetensors stores each tensor once and contiguous: copies drop shared storage (tied weights) and strides
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, str(dst),
              metadata={"converted_from": src.name})
    return len(sd)
