"""Lower layers never import higher ones: nothing under gnvideo/data imports gnvideo.demo."""

from __future__ import annotations

import ast
from pathlib import Path

import gnvideo.data

DATA = Path(gnvideo.data.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "gnvideo.data." * (node.level == 1) + "gnvideo." * (node.level == 2) + (node.module or "")
            names.add(base)
    return names


def test_data_does_not_import_the_demo():
    files = sorted(DATA.rglob("*.py"))
    assert len(files) > 5
    offenders = {f.name: sorted(m for m in _imported_modules(f) if m.startswith("gnvideo.demo")) for f in files}
    assert not {name: mods for name, mods in offenders.items() if mods}


def test_the_check_sees_a_demo_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from ..demo import synthetic\nimport gnvideo.demo.runs\n")
    assert {"gnvideo.demo", "gnvideo.demo.runs"} <= _imported_modules(probe)
