"""The package's layer order, checked over every module of ``gnvideo`` and ``data_prep`` (lazy imports included).

Layers, lowest first (see ``gnvideo/__init__.py``): a module imports only its own layer and lower ones, no two
modules import each other (directly or in a longer cycle), no module imports a private name (``_x``) of another,
and ``gnvideo.ops`` and ``gnvideo.data.decode`` import nothing of gnvideo outside themselves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (module prefix, layer); the longest matching prefix wins
LAYERS = [
    ("gnvideo", 0),  # the package docstring and version only
    ("gnvideo.errors", 0),
    ("gnvideo.ops", 1),
    ("gnvideo.models", 2),
    ("gnvideo.data.decode", 3),
    ("gnvideo.data", 4),
    ("gnvideo.evaluation", 5),
    ("gnvideo.results", 5),
    ("gnvideo.training", 6),
    ("gnvideo.report", 7),
    ("gnvideo.demo", 8),
    ("gnvideo.cli", 9),
    ("gnvideo.__main__", 9),
    ("data_prep", 10),
]
#: subpackages that import nothing of gnvideo outside themselves
SEALED = ("gnvideo.ops", "gnvideo.data.decode")


def layer_of(module: str) -> int:
    best = max((p for p, _ in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return dict(LAYERS)[best]


def module_files(root: Path, packages=("gnvideo", "data_prep")) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of ``packages`` under ``root``."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import statement of a module, wherever it stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                found.append((submodule, None) if submodule in modules else (source, alias.name))
    return [(m, n) for m, n in found if m.split(".")[0] in ("gnvideo", "data_prep")]


def violations(root: Path) -> list[str]:
    modules = module_files(root)
    problems, graph = [], {}
    for name, path in modules.items():
        graph[name] = set()
        for target, imported in imports_of(name, path, modules):
            if target not in modules:
                problems.append(f"{name} imports {target}, which is not a module of the package")
                continue
            if target != name:
                graph[name].add(target)
            if layer_of(target) > layer_of(name):
                problems.append(f"{name} (layer {layer_of(name)}) imports {target} (layer {layer_of(target)})")
            for sealed in SEALED:
                inside = name == sealed or name.startswith(sealed + ".")
                if inside and not (target == sealed or target.startswith(sealed + ".")):
                    problems.append(f"{name} imports {target}: {sealed} imports nothing of gnvideo outside itself")
            if imported and imported.startswith("_") and not imported.startswith("__") and target != name:
                problems.append(f"{name} imports the private name {imported} of {target}")
    # cycles: depth-first search over the import graph
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return problems


def test_the_package_keeps_its_layer_order():
    modules = module_files(ROOT)
    assert len(modules) > 50 and all(layer_of(m) >= 0 for m in modules)
    assert violations(ROOT) == []


def _plant(tmp_path: Path, files: dict[str, str]) -> list[str]:
    for rel, text in {"gnvideo/__init__.py": "", "gnvideo/data/__init__.py": "", "gnvideo/training/__init__.py": "",
                      "gnvideo/data/decode/__init__.py": "", "data_prep/__init__.py": "", **files}.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return violations(tmp_path)


@pytest.mark.parametrize("files, expected", [
    ({"gnvideo/data/a.py": "def f():\n    from gnvideo.training import module\n",
      "gnvideo/training/module.py": ""}, "gnvideo.data.a (layer 4) imports gnvideo.training.module (layer 6)"),
    ({"gnvideo/data/a.py": "from .b import x\n", "gnvideo/data/b.py": "def f():\n    from . import a\n"},
     "import cycle: gnvideo.data.a -> gnvideo.data.b -> gnvideo.data.a"),
    ({"gnvideo/data/a.py": "from .b import _helper\n", "gnvideo/data/b.py": "_helper = 1\n"},
     "gnvideo.data.a imports the private name _helper of gnvideo.data.b"),
    ({"gnvideo/data/decode/a.py": "from ..layout import x\n", "gnvideo/data/layout.py": ""},
     "gnvideo.data.decode.a imports gnvideo.data.layout: gnvideo.data.decode imports nothing of gnvideo outside"),
])
def test_the_check_catches_each_kind_of_violation(tmp_path, files, expected):
    found = _plant(tmp_path, files)
    assert any(p.startswith(expected) for p in found), found
