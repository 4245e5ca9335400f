"""One i3d_r50 training step with BN, GN via F.group_norm, and GN via the gnvideo kernel (printed, never asserted).

bf16 autocast, channels_last_3d model and input, SGD with momentum. Reports the median step time over --iters
steps (CUDA events, after --warmup steps) and the peak allocated memory, plus ratios to the BN step.

Example:
    python benchmarks/bench_train_step.py                      # 8 clips x 32 frames x 224^2
    python benchmarks/bench_train_step.py --clips 2 --frames 8 --size 112 --iters 5
    python benchmarks/bench_train_step.py --dry-run      # check the arguments, build the models on the CPU (no GPU)
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys

import torch
import torch.nn.functional as F

import gnvideo.ops

# name -> (norm kind, norm_options) for gnvideo.models.build_model
VARIANTS = {
    "bn": ("bn", {}),
    "gn_ref": ("gn", {"use_kernel": False}),
    "gn_kernel": ("gn", {"use_kernel": True}),
}


def measure(name: str, args: argparse.Namespace) -> dict:
    """Builds the model for one variant and times training steps; returns a JSON-able row."""
    from gnvideo.models import build_model

    norm, options = VARIANTS[name]
    model = build_model(args.model, num_classes=args.num_classes, norm=norm, norm_options=dict(options))
    model = model.cuda().to(memory_format=torch.channels_last_3d).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(args.clips, 3, args.frames, args.size, args.size, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last_3d)
    target = torch.randint(0, args.num_classes, (args.clips,), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    row = {
        "variant": name,
        "norm": norm,
        "norm_options": options,
        "step_ms_median": statistics.median(times),
        "step_ms_all": times,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
    }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="i3d_r50")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {list(VARIANTS)}")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file (rewritten after each variant)")
    parser.add_argument("--dry-run", action="store_true", help="check the arguments and build each model on the CPU")
    args = parser.parse_args(argv)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.iters < 1 or args.warmup < 0:
        parser.error(f"--iters must be >= 1 and --warmup >= 0, got {args.iters} and {args.warmup}")
    if args.dry_run:
        return dry_run(args)
    if not torch.cuda.is_available():
        sys.exit("bench_train_step: needs a CUDA device (torch.cuda.is_available() is False); nothing measured")
    # Built (or loaded from the cache) before any step: a training step never compiles the extension.
    if "gn_kernel" in args.variants and gnvideo.ops.load_extension() != "cuda":
        sys.exit("bench_train_step: the extension was built without its CUDA part (no nvcc); nothing measured")
    torch.backends.cudnn.benchmark = True
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print(f"{args.model}: {args.clips} clips x {args.frames} frames x {args.size}^2, bf16 autocast, channels_last_3d")
    probe = torch.empty(1, 8, 2, 2, 2, device="cuda", dtype=torch.bfloat16)
    print(f"gnvideo.ops: {gnvideo.ops.backend(probe)}")
    rows = []
    for name in args.variants.split(","):
        rows.append(measure(name, args))
        gc.collect()  # the previous model is gone once measure() returns
        torch.cuda.empty_cache()
        if args.json:  # after each variant: a run stopped at a time limit keeps what it measured
            write_json(args.json, args, rows, complete=False)
    base = next((r for r in rows if r["variant"] == "bn"), None)
    print(f"\n{'variant':10} {'step ms':>9} {'peak GiB':>9} {'time/BN':>8} {'mem/BN':>7}")
    for r in rows:
        rt = r["step_ms_median"] / base["step_ms_median"] if base else float("nan")
        rm = r["peak_mem_gib"] / base["peak_mem_gib"] if base else float("nan")
        print(f"{r['variant']:10} {r['step_ms_median']:9.1f} {r['peak_mem_gib']:9.2f} {rt:8.2f} {rm:7.2f}")
    if args.json:
        write_json(args.json, args, rows, complete=True)
        print(f"wrote {args.json}")
    return 0


def write_json(path: str, args: argparse.Namespace, rows: list, complete: bool) -> None:
    payload = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "args": vars(args),
               "complete": complete, "rows": rows}
    with open(path, "w") as fh:
        json.dump(payload, fh, indent=1)


def dry_run(args: argparse.Namespace) -> int:
    """Builds each variant's model on the CPU (no step is run) and prints the plan of a run with ``args``."""
    from gnvideo.models import build_model

    for name in args.variants.split(","):
        norm, options = VARIANTS[name]
        model = build_model(args.model, num_classes=args.num_classes, norm=norm, norm_options=dict(options))
        params = sum(p.numel() for p in model.parameters())
        print(f"{name}: {args.model}, norm {norm} {options}, {params / 1e6:.1f} M parameters")
    print(f"dry run: would time {args.iters} steps after {args.warmup} warm-up steps per variant, {args.clips} clips x "
          f"{args.frames} frames x {args.size}^2; json {args.json or '-'}; torch {torch.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
