"""GroupNorm kernel benchmark on the GN layers of i3d_r50 (printed, never asserted).

Compares gnvideo.ops.group_norm (CUDA kernel), F.group_norm (+ separate activation) and torch.compile'd
F.group_norm (+ activation) for forward and forward+backward, in bf16/fp32, contiguous/channels_last_3d, with the
model's ReLU fused or with no activation. Achieved bandwidth counts the traffic floor (forward reads x and writes y:
2 x tensor bytes; backward reads x, dy and writes dx: 3 x) and is reported as a fraction of a device-to-device copy
measured in the same run. Times are medians (triton.testing.do_bench when available, else CUDA events).
Table columns: times in ms; xE / xC = speedup of ours over eager / compiled; %cp = our achieved bandwidth as a
percentage of the copy bandwidth. The weighted total multiplies each layer by how often it occurs in the network.

Example:
    python benchmarks/bench_group_norm.py --json runs/bench_gn.json
    python benchmarks/bench_group_norm.py --configs 8x32 --dtypes bf16 --layouts cl --no-compile
    python benchmarks/bench_group_norm.py --dry-run     # check the arguments and print the plan (no GPU needed)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections import OrderedDict

import torch

from gnvideo.ops import backend, group_norm, load_extension, reference_group_norm

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
LAYOUTS = {"contig": torch.contiguous_format, "cl": torch.channels_last_3d}
CONFIGS = {"8x32": (8, 32), "4x64": (4, 64)}  # clips x frames at 224^2
ACT_MODES = {"model": "the layer's own activation", "none": "no activation"}


def i3d_r50_gn_layers(clips: int, frames: int, size: int = 224) -> list[dict]:
    """Distinct GroupNorm inputs of i3d_r50 for a (clips, 3, frames, size, size) batch, with how often each occurs.

    Architecture (pytorchvideo-style I3D ResNet-50): conv1 stride (2, 2, 2) -> 64 ch at (T/2, S/2); pool (2, 2, 2)
    -> res2 at (T/4, S/4); pool (2, 1, 1) after res2; stages (inner/out channels, blocks, spatial stride of conv_b):
    res2 64/256 x3 s1, res3 128/512 x4 s2, res4 256/1024 x6 s2, res5 512/2048 x3 s2. Each bottleneck has GN after
    conv_a (+ReLU), conv_b (+ReLU) and conv_c (no activation; ReLU follows the residual add); the first block of a
    stage also normalizes its projection shortcut. conv_a of a first block runs at the stage's input resolution.
    """
    table: OrderedDict[tuple, dict] = OrderedDict()

    def add(name: str, channels: int, t: int, h: int, activation: str, count: int) -> None:
        key = (channels, t, h, activation)
        if key in table:
            table[key]["count"] += count
            table[key]["name"] += f"+{name}"
        else:
            table[key] = {"name": name, "shape": (clips, channels, t, h, h), "activation": activation, "count": count}

    t, h = frames // 2, size // 2
    add("stem", 64, t, h, "relu", 1)
    t, h = t // 2, h // 2
    for stage, inner, out, blocks, stride in (
        ("res2", 64, 256, 3, 1),
        ("res3", 128, 512, 4, 2),
        ("res4", 256, 1024, 6, 2),
        ("res5", 512, 2048, 3, 2),
    ):
        h_out = h // stride
        add(f"{stage}.a0", inner, t, h, "relu", 1)
        add(f"{stage}.ab", inner, t, h_out, "relu", 2 * blocks - 1)
        add(f"{stage}.c+sc", out, t, h_out, "none", blocks + 1)
        h = h_out
        if stage == "res2":
            t //= 2
    return list(table.values())


def time_ms(fn, warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median milliseconds per call of ``fn`` on the current CUDA stream."""
    try:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    except ImportError:
        pass
    for _ in range(5):
        fn()
    times = []
    for _ in range(30):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth(dtype: torch.dtype, nbytes: int, rep_ms: int = 100) -> float:
    """GB/s of a device-to-device copy (read + write) of ``nbytes``."""
    n = max(nbytes // torch.empty((), dtype=dtype).element_size(), 1)
    src = torch.randn(n, device="cuda").to(dtype)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), rep_ms=rep_ms)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="8x32,4x64", help=f"clips x frames, from {list(CONFIGS)}")
    parser.add_argument("--dtypes", default="bf16,fp32", help=f"from {list(DTYPES)}")
    parser.add_argument("--layouts", default="contig,cl", help=f"from {list(LAYOUTS)}")
    parser.add_argument("--acts", default="model,none", help="model = the layer's ReLU (fused in ours); none")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile'd F.group_norm")
    parser.add_argument("--rep-ms", type=int, default=100, help="milliseconds of timed repetitions per measurement")
    parser.add_argument("--json", default=None, help="write all rows to this JSON file (rewritten after each table)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the arguments, run the reference path once per table on the CPU, print the plan")
    args = parser.parse_args(argv)
    for flag, value, table in (("--configs", args.configs, CONFIGS), ("--dtypes", args.dtypes, DTYPES),
                               ("--layouts", args.layouts, LAYOUTS), ("--acts", args.acts, ACT_MODES)):
        unknown = [v for v in value.split(",") if v not in table]
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(table)}")
    if args.rep_ms <= 0:
        parser.error(f"--rep-ms must be positive, got {args.rep_ms}")
    if args.dry_run:
        return dry_run(args)
    if not torch.cuda.is_available():
        sys.exit("bench_group_norm: needs a CUDA device (torch.cuda.is_available() is False); nothing measured")
    if load_extension() != "cuda":
        sys.exit("bench_group_norm: the extension was built without its CUDA part (no nvcc); nothing measured")

    torch._dynamo.config.cache_size_limit = 256
    impls = {
        "ours": lambda x, w, b, act: group_norm(x, args.groups, w, b, activation=act, backend="kernel"),
        "eager": lambda x, w, b, act: reference_group_norm(x, args.groups, w, b, activation=act),
    }
    if not args.no_compile:
        compiled = torch.compile(reference_group_norm, dynamic=True)
        impls["compiled"] = lambda x, w, b, act: compiled(x, args.groups, w, b, 1e-5, act)

    device = torch.cuda.get_device_name()
    print(f"device: {device}; torch {torch.__version__}")
    copy_gbps = {name: copy_bandwidth(DTYPES[name], 1 << 30, args.rep_ms) for name in args.dtypes.split(",")}
    print("device-to-device copy: " + ", ".join(f"{k} {v:.0f} GB/s" for k, v in copy_gbps.items()))
    rows, totals = [], []
    header = (
        f"{'config':6} {'dt':4} {'lay':6} {'act':5} {'layer':22} {'shape':>26} {'n':>2} | "
        f"{'fwd ours':>8} {'eager':>7} {'comp':>7} {'xE':>5} {'xC':>5} {'%cp':>4} | "
        f"{'f+b ours':>8} {'eager':>7} {'comp':>7} {'xE':>5} {'xC':>5} {'%cp':>4}"
    )
    for cfg in args.configs.split(","):
        clips, frames = CONFIGS[cfg]
        layers = i3d_r50_gn_layers(clips, frames, args.size)
        for dname in args.dtypes.split(","):
            for lname in args.layouts.split(","):
                for amode in args.acts.split(","):
                    print(f"\n{header}")
                    total = {"config": cfg, "dtype": dname, "layout": lname, "act": amode}
                    for layer in layers:
                        row = bench_layer(layer, DTYPES[dname], LAYOUTS[lname], amode, impls, copy_gbps[dname],
                                          args.rep_ms)
                        row.update(config=cfg, dtype=dname, layout=lname, act=amode)
                        rows.append(row)
                        for key, val in row["ms"].items():
                            total[key] = total.get(key, 0.0) + val * layer["count"]
                        print_row(row)
                    totals.append(total)
                    print(
                        "  weighted total (ms, x count): "
                        + ", ".join(f"{k} {v:.2f}" for k, v in total.items() if isinstance(v, float))
                    )
                    if args.json:  # after each table: a run stopped at a time limit keeps what it measured
                        write_json(args.json, device, copy_gbps, rows, totals, complete=False)
    if args.json:
        write_json(args.json, device, copy_gbps, rows, totals, complete=True)
        print(f"wrote {args.json}")
    return 0


def write_json(path: str, device: str, copy_gbps: dict, rows: list, totals: list, complete: bool) -> None:
    payload = {"device": device, "torch": torch.__version__, "copy_gbps": copy_gbps, "backend": backend(),
               "complete": complete, "rows": rows, "totals": totals}
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1)


def dry_run(args: argparse.Namespace) -> int:
    """Prints the plan of a run with ``args`` and runs each table's eager path once on a small CPU tensor."""
    tables = list(itertools.product(args.dtypes.split(","), args.layouts.split(","), args.acts.split(",")))
    for dname, lname, amode in tables:
        x = torch.randn(2, args.groups, 2, 3, 3).to(DTYPES[dname]).contiguous(memory_format=LAYOUTS[lname])
        w, b = torch.rand(args.groups).to(x.dtype) + 0.5, torch.randn(args.groups).to(x.dtype)
        reference_group_norm(x, args.groups, w, b, activation="relu" if amode == "model" else "none")
    impls = 2 if args.no_compile else 3
    timings = 0
    for cfg in args.configs.split(","):
        layers = i3d_r50_gn_layers(*CONFIGS[cfg], args.size)
        timings += len(layers) * len(tables) * impls * 2
        print(f"{cfg}: {len(layers)} GN layers x {len(tables)} tables (dtype x layout x activation) x {impls} "
              "implementations x (fwd, fwd+bwd)")
    print(f"dry run: would make {timings} timings of {args.rep_ms} ms each (plus warm-up and compiles); "
          f"json {args.json or '-'}; torch {torch.__version__}")
    return 0


def bench_layer(layer: dict, dtype: torch.dtype, layout, amode: str, impls: dict, copy_gbps: float,
                rep_ms: int = 100) -> dict:
    """Times every implementation on one layer; returns a JSON-able row."""
    shape, c = layer["shape"], layer["shape"][1]
    act = layer["activation"] if amode == "model" else "none"
    x = torch.randn(shape, device="cuda", dtype=dtype).contiguous(memory_format=layout)
    w = torch.rand(c, device="cuda", dtype=dtype) + 0.5
    b = torch.randn(c, device="cuda", dtype=dtype)
    dy = torch.randn_like(x)
    nbytes = x.numel() * x.element_size()
    ms = {}
    for name, fn in impls.items():
        ms[f"fwd_{name}"] = time_ms(lambda fn=fn: fn(x, w, b, act), rep_ms=rep_ms)
        leaves = [t.detach().requires_grad_(True) for t in (x, w, b)]

        def fwd_bwd(fn=fn, leaves=leaves):
            torch.autograd.grad(fn(*leaves, act), leaves, dy)

        ms[f"fwdbwd_{name}"] = time_ms(fwd_bwd, rep_ms=rep_ms)
    row = {
        "layer": layer["name"],
        "shape": list(shape),
        "count": layer["count"],
        "activation": act,
        "backend": backend(x),
        "ms": ms,
    }
    row["fwd_frac_of_copy"] = 2 * nbytes / ms["fwd_ours"] / 1e6 / copy_gbps
    row["fwdbwd_frac_of_copy"] = 5 * nbytes / ms["fwdbwd_ours"] / 1e6 / copy_gbps
    for kind in ("fwd", "fwdbwd"):
        for other in ("eager", "compiled"):
            if f"{kind}_{other}" in ms:
                row[f"{kind}_speedup_vs_{other}"] = ms[f"{kind}_{other}"] / ms[f"{kind}_ours"]
    return row


def print_row(r: dict) -> None:
    ms = r["ms"]

    def cell(key: str, width: int) -> str:
        return f"{ms[key]:{width}.3f}" if key in ms else " " * (width - 1) + "-"

    def ratio(key: str) -> str:
        return f"{r[key]:5.2f}" if key in r else "    -"

    print(
        f"{r['config']:6} {r['dtype']:4} {r['layout']:6} {r['activation']:5} {r['layer'][:22]:22} "
        f"{str(tuple(r['shape'])):>26} {r['count']:>2} | {cell('fwd_ours', 8)} {cell('fwd_eager', 7)} "
        f"{cell('fwd_compiled', 7)} {ratio('fwd_speedup_vs_eager')} {ratio('fwd_speedup_vs_compiled')} "
        f"{100 * r['fwd_frac_of_copy']:4.0f} | {cell('fwdbwd_ours', 8)} {cell('fwdbwd_eager', 7)} "
        f"{cell('fwdbwd_compiled', 7)} {ratio('fwdbwd_speedup_vs_eager')} {ratio('fwdbwd_speedup_vs_compiled')} "
        f"{100 * r['fwdbwd_frac_of_copy']:4.0f}"
    )


if __name__ == "__main__":
    sys.exit(main())
