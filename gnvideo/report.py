"""BN-vs-GN tables and plots from finished runs (``gnvideo report RUN_DIR... [--paper] [--plot out.png] [--chance]``).

Reads every result file (``results*.json``, :mod:`gnvideo.results`) under the given folders (recursively), groups
them by normalization (rows) and by ``frames x clips per GPU`` (columns), and prints the layout of Table 8 of the Group
Normalization paper (Wu & He, 2018) as markdown: each cell is ``top-1 / top-5`` in percent, ``mean ± std`` when
several seeds share a cell. "Clips per GPU" is the number of clips one normalization sees
(:func:`gnvideo.results.clips_per_norm`: ``sub_bn`` runs fill the BN row at their ``clips_per_group``). Runs of a
backbone with non-local blocks fill rows of their own, after their norm's plain row (``BN + NL5``,
:func:`gnvideo.results.report_row_of`); ``--paper`` then adds the Non-local code's result for the 5-block BN model.

A cell averages only over seeds: every other field of the setting (backbone, dataset and class count, sampling rate,
clips per device, devices x accumulation, norm and options, initialization, input normalization, test views and the
scored annotation file; :func:`gnvideo.results.comparison_key`) must agree, or the report stops and names the fields
that differ. Repeated tests of one run (same setting and seed) count once: the newest file is used, and a note says so.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from gnvideo.models.norms import REPORT_ORDER
from gnvideo.results import clips_per_norm, comparison_key, load_results, report_row_of

__all__ = ["NONLOCAL_TOP1", "PAPER_TOP1", "MixedSettingsError", "collect", "load_results", "main", "markdown_table",
           "plot", "render", "row_label"]

#: Kinetics-400 top-1 (%) of ResNet-50 I3D from Table 8 of the GN paper: (norm, frames, clips per GPU) -> top-1.
PAPER_TOP1: dict[tuple[str, int, int], float] = {
    ("bn", 32, 8): 73.3,
    ("gn", 32, 8): 73.0,
    ("bn", 32, 4): 72.1,
    ("gn", 32, 4): 72.8,
    ("bn", 64, 4): 73.3,
    ("gn", 64, 4): 74.5,
}
#: Kinetics-400 (top-1, top-5) (%) of R50 I3D with 5 non-local blocks, 32 x 2 frames, 8 clips per GPU, ImageNet
#: init, from the Non-local code's model zoo (facebookresearch/video-nonlocal-net; without the blocks: 73.6 / 90.8).
NONLOCAL_TOP1: dict[tuple[str, int, int], tuple[float, float]] = {("bn + NL5", 32, 8): (74.9, 91.6)}
_NORM_ORDER = REPORT_ORDER  # from the norm registry
_DASH = "—"


class MixedSettingsError(ValueError):
    """Runs that differ in more than their seed would share a table cell."""


def collect(results: Sequence[dict], notes: list[str] | None = None) -> dict[tuple[str, int, int], list[dict]]:
    """Group results by ``(report row, num_frames, clips per GPU)``, one result per seed.

    Args:
        results: result dicts (see :mod:`gnvideo.results`).
        notes: when given, receives a line per seed whose repeated results were reduced to the newest file.

    Raises:
        MixedSettingsError: two results in one cell differ in a setting field other than the seed.
    """
    cells: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in results:
        s = r["setting"]
        cells[(report_row_of(s), int(s.get("num_frames") or 0), clips_per_norm(s))].append(r)
    out = {}
    for cell, rs in cells.items():
        keys = [comparison_key(r) for r in rs]
        differ = sorted({f for k in keys[1:] for f in k if k[f] != keys[0][f]})
        if differ:
            n, f, c = cell
            examples = {field: {repr(k[field]): r.get("path", "?") for k, r in zip(keys, rs)} for field in differ}
            detail = "; ".join(f"{field}: " + ", ".join(f"{v} in {path}" for v, path in sorted(ex.items()))
                               for field, ex in examples.items())
            raise MixedSettingsError(
                f"report: the {row_label(n)} cell at {f} frames, {c} clips/GPU mixes runs that differ in "
                f"{', '.join(differ)} ({detail}); report them separately")
        by_seed: dict = defaultdict(list)
        for r in rs:
            by_seed[r["setting"].get("seed")].append(r)
        kept = []
        for seed, same in by_seed.items():
            same.sort(key=lambda r: Path(r["path"]).stat().st_mtime if Path(r.get("path", "")).is_file() else 0)
            kept.append(same[-1])
            if len(same) > 1 and notes is not None:
                notes.append(f"Note: {len(same)} results of seed {seed} in {row_label(cell[0])} {cell[1]} frames, "
                             f"{cell[2]} clips/GPU (repeated tests of one setting); the newest is used: "
                             f"{same[-1].get('path', '?')}.")
        out[cell] = kept
    return out


def _num(x) -> float:
    return math.nan if x is None else float(x)


def _fmt(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return _DASH
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def row_label(row: str) -> str:
    """Printed name of a report row: ``bn`` -> ``BN``, ``bn + NL5`` -> ``BN + NL5``."""
    norm, _, tag = row.partition(" + ")
    return norm.upper() + (f" + {tag}" if tag else "")


def _row_order(rows: Iterable[str]) -> list[str]:
    def key(row: str) -> tuple:
        norm, _, tag = row.partition(" + ")
        return (_NORM_ORDER.index(norm) if norm in _NORM_ORDER else len(_NORM_ORDER), norm, tag != "", tag)

    return sorted(set(rows), key=key)


def markdown_table(results: Sequence[dict], paper: bool = False, chance: bool = False) -> str:
    """Markdown table in the layout of the GN paper's Table 8.

    Args:
        results: results dicts (``top1``, ``top5`` in percent and ``setting``).
        paper: add rows with the paper's top-1 (its top-5 is not given: printed as "—"), and the Non-local code's
            result beside a ``BN + NL5`` row of ours.
        chance: add a line with chance-level accuracy (needs ``num_classes`` in the results).

    Returns:
        The markdown text (header, separator, one row per norm, optional paper rows and notes).
    """
    notes: list[str] = []
    cells = collect(results, notes)
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
        lines.append(f"| {row_label(n)} (ours) | " + " | ".join(row) + " |")
    if paper:
        for n in ("bn", "gn"):
            row = [f"{PAPER_TOP1[(n, f, c)]:.1f} / {_DASH}" if (n, f, c) in PAPER_TOP1 else _DASH for f, c in cols]
            lines.append(f"| {n.upper()} (paper) | " + " | ".join(row) + " |")
        for n in sorted({n for (n, _, _) in NONLOCAL_TOP1} & set(norms)):
            row = ["{:.1f} / {:.1f}".format(*NONLOCAL_TOP1[(n, f, c)]) if (n, f, c) in NONLOCAL_TOP1 else _DASH
                   for f, c in cols]
            lines.append(f"| {row_label(n)} (Non-local code) | " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Cells: video-level top-1 / top-5 (%), mean ± std over seeds when n > 1.")
    lines.extend(notes)
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
                    capsize=3, color=color[n], label=f"{row_label(n)} {f} frames")
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
    try:
        results = load_results(a.runs)
        text = render(results, paper=a.paper, plot_path=a.plot, chance=a.chance)
    except (FileNotFoundError, ValueError) as e:
        print(f"gnvideo {e}", file=sys.stderr)
        return 2
    print(text)
    if a.plot:
        print(f"plot saved to {a.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
