"""The encoder settings of every clip, as the data tools' reports record them: a table of the distinct x264
settings (as x264 wrote them into the files) and, per clip path, the index of its settings."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from gnvideo.data.decode.keyframes import encoder_settings


def encoder_tables(settings_of: dict[str, dict]) -> tuple[list[dict], dict[str, int]]:
    """(distinct settings, each with its number of clips; clip path -> index into them) from clip path -> settings."""
    table: list[dict] = []
    index_of: dict[str, int] = {}
    clip_encoders: dict[str, int] = {}
    for relpath in sorted(settings_of):
        key = json.dumps(settings_of[relpath], sort_keys=True)
        if key not in index_of:
            index_of[key] = len(table)
            table.append({"settings": settings_of[relpath], "clips": 0})
        table[index_of[key]]["clips"] += 1
        clip_encoders[relpath] = index_of[key]
    return table, clip_encoders


def recorded_encoders(report_path: str | os.PathLike) -> dict[str, dict]:
    """Clip path -> encoder settings from an earlier report (empty when it has none or cannot be read)."""
    try:
        report = json.loads(Path(report_path).read_text(encoding="utf-8"))
        table, clips = report.get("encoders", []), report.get("clip_encoders", {})
        return {relpath: table[i]["settings"] for relpath, i in clips.items()}
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {}


def clip_settings(root: Path, relpaths: Iterable[str], earlier: dict[str, dict]) -> dict[str, dict]:
    """The encoder settings of each clip below ``root``: an earlier report's record, else what x264 wrote into the
    file (read from its first bytes, ~0.3 ms; empty for other encoders)."""
    return {r: earlier[r] if r in earlier else encoder_settings(root / r) for r in relpaths}


__all__ = ["clip_settings", "encoder_tables", "recorded_encoders"]
