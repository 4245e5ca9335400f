"""BN-vs-GN tables and plots from finished runs (``gnvideo report RUN_DIR... [--paper] [--plot out.png] [--chance]``).

Reads every ``results.json`` under the given folders (recursively), groups them by normalization (rows) and by
``frames x clips per GPU`` (columns), and prints the layout of Table 8 of the Group Normalization paper
(Wu & He, 2018) as markdown: each cell is ``top-1 / top-5`` in percent, ``mean ± std`` when several seeds share a cell.
"Clips per GPU" is the number of clips one normalization sees: ``clips_per_device`` or, for ``sub_bn``,
``norm_options.clips_per_group`` when it is recorded (``sub_bn`` runs fill the BN row: they reproduce per-GPU BN).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from gnvideo.models.norms import REPORT_ORDER, report_row

__all__ = ["PAPER_TOP1", "collect", "load_results", "main", "markdown_table", "plot", "read_metrics", "render"]

#: Kinetics-400 top-1 (%) of ResNet-50 I3D from Table 8 of the GN paper: (norm, frames, clips per GPU) -> top-1.
PAPER_TOP1: dict[tuple[str, int, int], float] = {
    ("bn", 32, 8): 73.3,
    ("gn", 32, 8): 73.0,
    ("bn", 32, 4): 72.1,
    ("gn", 32, 4): 72.8,
    ("bn", 64, 4): 73.3,
    ("gn", 64, 4): 74.5,
}
_NORM_ORDER = REPORT_ORDER  # from the norm registry
_DASH = "—"


def read_metrics(run_dir: str | Path, key: str) -> dict[int, float]:
    """``key``'s value per step from a run's ``metrics.csv``.

    A resumed fit appends to the file; the steps its killed attempt ran after the last checkpoint are logged again,
    and the later row of a step wins.
    """
    import csv

    out: dict[int, float] = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get(key) not in (None, ""):
                out[int(row["step"])] = float(row[key])
    return out


def load_results(paths: Iterable[str | Path]) -> list[dict]:
    """Read ``results.json`` files: each path is a file or a folder searched recursively.

    Raises:
        FileNotFoundError: a path does not exist, or no results.json was found anywhere.
        ValueError: a file is not valid JSON or lacks ``top1``/``setting``.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"report: {p} does not exist")
        files.extend([p] if p.is_file() else sorted(p.rglob("results.json")))
    if not files:
        raise FileNotFoundError(f"report: no results.json under {', '.join(map(str, paths))}")
    out = []
    for f in files:
        try:
            r = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"report: {f} is not valid JSON: {e}") from e
        if "top1" not in r or "setting" not in r:
            raise ValueError(f"report: {f} lacks 'top1' or 'setting'")
        r.setdefault("path", str(f))
        out.append(r)
    return out


def _clips_per_norm(setting: dict) -> int:
    opts = setting.get("norm_options") or {}
    if setting.get("norm") == "sub_bn" and opts.get("clips_per_group"):
        return int(opts["clips_per_group"])
    return int(setting.get("clips_per_device", 0))


def collect(results: Sequence[dict]) -> dict[tuple[str, int, int], list[dict]]:
    """Group results by ``(norm, num_frames, clips per GPU)``."""
    cells: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in results:
        s = r["setting"]
        norm = str(s.get("norm", "?"))
        # sub_bn is per-device BN simulated on fewer devices: it belongs in the BN row, at its clips_per_group.
        row = report_row(norm)
        cells[(row, int(s.get("num_frames", 0)), _clips_per_norm(s))].append(r)
    return dict(cells)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _fmt(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return _DASH
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def _row_order(norms: Iterable[str]) -> list[str]:
    return sorted(set(norms), key=lambda n: (_NORM_ORDER.index(n) if n in _NORM_ORDER else len(_NORM_ORDER), n))


def markdown_table(results: Sequence[dict], paper: bool = False, chance: bool = False) -> str:
    """Markdown table in the layout of the GN paper's Table 8.

    Args:
        results: results dicts (``top1``, ``top5`` in percent and ``setting``).
        paper: add rows with the paper's top-1 (its top-5 is not given: printed as "—").
        chance: add a line with chance-level accuracy (needs ``num_classes`` in the results).

    Returns:
        The markdown text (header, separator, one row per norm, optional paper rows and notes).
    """
    cells = collect(results)
    cols = {(f, c) for (_, f, c) in cells}
    if paper:
        cols |= {(f, c) for (_, f, c) in PAPER_TOP1}
    cols = sorted(cols, key=lambda fc: (fc[0], -fc[1]))
    norms = _row_order([n for (n, _, _) in cells])
    header = "| norm | " + " | ".join(f"{f} frames, {c} clips/GPU" for f, c in cols) + " |"
    lines = [header, "|" + "---|" * (len(cols) + 1)]
    for n in norms:
        row = []
        for f, c in cols:
            rs = cells.get((n, f, c), [])
            if not rs:
                row.append(_DASH)
                continue
            t1 = _fmt([_num(r["top1"]) for r in rs])
            t5 = _fmt([_num(r.get("top5")) for r in rs])
            row.append(f"{t1} / {t5}" + (f" (n={len(rs)})" if len(rs) > 1 else ""))
        lines.append(f"| {n.upper()} (ours) | " + " | ".join(row) + " |")
    if paper:
        for n in ("bn", "gn"):
            row = [f"{PAPER_TOP1[(n, f, c)]:.1f} / {_DASH}" if (n, f, c) in PAPER_TOP1 else _DASH for f, c in cols]
            lines.append(f"| {n.upper()} (paper) | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Cells: video-level top-1 / top-5 (%), mean ± std over seeds when n > 1.")
    if chance:
        ks = sorted({int(r["num_classes"]) for r in results if r.get("num_classes")})
        for k in ks:
            lines.append(f"Chance with {k} classes: top-1 {100 / k:.1f}%, top-5 {100 * min(5, k) / k:.1f}%.")
        if not ks:
            lines.append("Chance level unknown (results.json has no num_classes).")
    return "\n".join(lines)


def plot(results: Sequence[dict], out: str | Path, paper: bool = False, chance: bool = False) -> Path:
    """Save a PNG of top-1 against clips per GPU, one line per (norm, frames), error bars over seeds.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = collect(results)
    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    for (n, f, c), rs in cells.items():
        vals = [v for v in (_num(r["top1"]) for r in rs) if not math.isnan(v)]
        if vals:
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            series[(n, f)].append((c, statistics.mean(vals), sd))
    norms = _row_order({n for n, _ in series} | ({"bn", "gn"} if paper else set()))
    color = {n: f"C{i}" for i, n in enumerate(norms)}
    markers = {f: m for f, m in zip(sorted({f for _, f in series} | {32, 64}), "osD^v<>")}
    xs = {c for pts in series.values() for c, _, _ in pts}
    for (n, f), pts in sorted(series.items(), key=lambda kv: (norms.index(kv[0][0]), kv[0][1])):
        pts.sort()
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], marker=markers.get(f, "o"),
                    capsize=3, color=color[n], label=f"{n.upper()} {f} frames")
    if paper:
        for n in ("bn", "gn"):
            for f in sorted({f for (m, f, _) in PAPER_TOP1 if m == n}):
                pts = sorted((c, v) for (m, ff, c), v in PAPER_TOP1.items() if m == n and ff == f)
                xs |= {c for c, _ in pts}
                ax.plot([p[0] for p in pts], [p[1] for p in pts], linestyle="--", marker=markers.get(f, "x"),
                        mfc="none", color=color[n], label=f"{n.upper()} {f} frames (paper)")
    if chance:
        for k in sorted({int(r["num_classes"]) for r in results if r.get("num_classes")}):
            ax.axhline(100 / k, color="gray", linestyle=":", label=f"chance ({k} classes)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(xs), [str(x) for x in sorted(xs)])
    ax.minorticks_off()
    ax.set_xlabel("clips per GPU (normalization batch)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def render(results: Sequence[dict], paper: bool = False, plot_path: str | Path | None = None,
           chance: bool = False) -> str:
    """Table (and optional plot) from in-memory results dicts; what the demo calls.

    Returns:
        The markdown table; the plot is saved to ``plot_path`` when given.
    """
    if not results:
        raise ValueError("report: no results to render")
    text = markdown_table(results, paper=paper, chance=chance)
    if plot_path is not None:
        plot(results, plot_path, paper=paper, chance=chance)
    return text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gnvideo report``."""
    p = argparse.ArgumentParser(prog="gnvideo report", description="BN-vs-GN table from results.json files")
    p.add_argument("runs", nargs="+", help="run folders (searched recursively) or results.json files")
    p.add_argument("--paper", action="store_true", help="print the GN paper's Table 8 numbers beside ours")
    p.add_argument("--plot", metavar="OUT.png", help="save a PNG of top-1 against clips per GPU")
    p.add_argument("--chance", action="store_true", help="show chance-level accuracy")
    a = p.parse_args(argv)
    results = load_results(a.runs)
    print(render(results, paper=a.paper, plot_path=a.plot, chance=a.chance))
    if a.plot:
        print(f"plot saved to {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
