"""Peak memory and time of one non-local block, forward + backward: the efficient forms against the explicit one.

The block (``gnvideo.models.nonlocal_block.NonLocal3d``, BN) runs at the input of a res3 (or res4) non-local block of
i3d_r50 for ``--clips`` clips of ``--frames`` x ``--size``^2 (default 8 x 32 x 224^2: (8, 512, 4, 28, 28), 3136
queries and 784 keys per clip). Variants: the embedded Gaussian through ``scaled_dot_product_attention``
(``gaussian_sdpa``) and with the affinity matrix (``gaussian_explicit``); the dot product as (g phi^T) theta / S
(``dot_reassoc``) and with the matrix (``dot_explicit``). Each row gives the median forward + backward time, the peak
memory above what was allocated before the step (inputs, output gradient and weights), the memory the autograd graph
keeps for backward (saved tensors other than the input and the weights), and its ratios to the explicit form of the
same instantiation, measured in the same run. ``--model-memory`` also counts, for i3d_r50 and i3d_r50_nl5 with one
clip, the memory kept for backward by the whole model: what the 5 blocks add per clip in training.

On a GPU: bf16 autocast by default (the training recipe's precision), CUDA events, ``torch.cuda.max_memory_allocated``,
all in one process. On the CPU: float32, wall-clock time, and the peak resident memory (Linux ``VmHWM``, reset before
the measured steps) of a fresh process per variant, so that one variant's freed memory does not hide the next one's.
Needs torch only (no pytorchvideo, decord, av or jsonargparse). Printed, never asserted.

Example:
    nice -n 10 python benchmarks/bench_nonlocal.py                  # CPU: the res3 shape, 2 steps per variant
    python benchmarks/bench_nonlocal.py --json runs/bench_nonlocal.json --model-memory      # on a GPU
    python benchmarks/bench_nonlocal.py --stage res4 --clips 2 --variants gaussian_sdpa,gaussian_explicit
    python benchmarks/bench_nonlocal.py --device cuda --model-memory --dry-run   # check the arguments, build the
                                                    # blocks and models on the CPU, nothing timed (no GPU needed)
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from gnvideo.models.nonlocal_block import NonLocal3d

VARIANTS = {  # name -> (instantiation, implementation)
    "gaussian_sdpa": ("embedded_gaussian", "efficient"),
    "gaussian_explicit": ("embedded_gaussian", "explicit"),
    "dot_reassoc": ("dot_product", "efficient"),
    "dot_explicit": ("dot_product", "explicit"),
}
BASELINE = {"embedded_gaussian": "gaussian_explicit", "dot_product": "dot_explicit"}
#: i3d_r50 stage -> (channels, spatial stride from the input); both stages run at frames / 8 temporal positions
STAGES = {"res3": (512, 8), "res4": (1024, 16)}
#: the rows of ``--model-memory``: (backbone, non-local implementation); the first is the plain model
MODEL_MEMORY_ROWS = (("i3d_r50", "efficient"), ("i3d_r50_nl5", "efficient"), ("i3d_r50_nl5", "explicit"))
MIB = 2**20


def block_input_shape(args: argparse.Namespace) -> tuple[int, int, int, int, int]:
    channels, stride = STAGES[args.stage]
    return (args.clips, channels, args.frames // 8, args.size // stride, args.size // stride)


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_cpu_peak() -> int:
    """Return freed heap memory to the OS, reset the peak resident size to the current one; returns that size."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc: freed memory may stay resident, the peak then reads low for both forms alike
        pass
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _proc_status("VmRSS")


class SavedBytes:
    """Counts the bytes autograd keeps for backward (distinct storages), leaving out the given tensors' storages."""

    def __init__(self, exclude: list[torch.Tensor]):
        self.skip = {t.untyped_storage().data_ptr() for t in exclude}
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.seen[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())


def attention_op(prof) -> str | None:
    """The aten attention op a profiled forward dispatched to (the backend torch chose), or None without one."""
    names = [e.name for e in prof.events() if "attention" in e.name and e.name != "aten::scaled_dot_product_attention"]
    return names[0] if names else None


def measure(name: str, args: argparse.Namespace) -> dict:
    """One variant: a first step (profiled, counting what autograd keeps), ``args.warmup`` more, then time
    ``args.iters`` forward + backward steps and take the peak memory above what was allocated before them."""
    from torch.profiler import ProfilerActivity, profile

    cuda = args.device == "cuda"
    instantiation, implementation = VARIANTS[name]
    torch.manual_seed(0)
    block = NonLocal3d(STAGES[args.stage][0], instantiation=instantiation, implementation=implementation)
    with torch.no_grad():
        block.norm.weight.fill_(1.0)  # a trained block: gradients flow through every conv
    block = block.to(args.device).train()
    autocast = args.dtype == "bf16"
    x = torch.randn(block_input_shape(args), device=args.device, requires_grad=True)
    dy = torch.randn_like(x)
    params = list(block.parameters())

    def step() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        with torch.autocast(args.device, dtype=torch.bfloat16, enabled=autocast):
            out = block(x)
        out.backward(dy)

    counter = SavedBytes([x, *params])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            step()
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        gc.collect()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_cpu_peak()
    times = []
    for _ in range(args.iters):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    peak = (torch.cuda.max_memory_allocated() if cuda else _proc_status("VmHWM")) - base
    return {"variant": name, "instantiation": instantiation, "implementation": implementation,
            "attention_op": attention_op(prof), "ms_median": statistics.median(times), "ms_all": times,
            "peak_mib": peak / MIB, "saved_mib": counter.bytes / MIB}


def measure_in_child(name: str, argv: list[str]) -> dict:
    """CPU: run ``measure`` in a fresh interpreter (its own peak resident size) and read its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--child", name]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bench_nonlocal: variant {name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def model_memory(args: argparse.Namespace) -> list[dict]:
    """Per clip in training: the memory the autograd graph keeps for backward, and on a GPU the peak of a forward +
    backward above the weights and the input; i3d_r50 against i3d_r50_nl5 (both forms)."""
    from gnvideo.models import build_model

    cuda = args.device == "cuda"
    rows = []
    x = torch.randn(1, 3, args.frames, args.size, args.size, device=args.device)
    for backbone, implementation in MODEL_MEMORY_ROWS:
        model = build_model(backbone, nonlocal_implementation=implementation).to(args.device).train()
        counter = SavedBytes([x, *model.parameters()])
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
                logits = model(x)
        peak = None
        if cuda:
            logits.float().sum().backward()
            torch.cuda.synchronize()
            peak = (torch.cuda.max_memory_allocated() - base) / MIB
        del logits, model
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
        rows.append({"backbone": backbone, "implementation": implementation,
                     "saved_mib_per_clip": counter.bytes / MIB, "peak_mib_per_clip": peak})
    return rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=sorted(STAGES), default="res3")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                   help="default: bf16 autocast on cuda, fp32 on cpu")
    p.add_argument("--iters", type=int, default=None, help="measured steps (default: 20 on cuda, 2 on cpu)")
    p.add_argument("--warmup", type=int, default=None,
                   help="steps between the first (profiled) one and the measured ones (default: 5 on cuda, 0 on cpu)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {list(VARIANTS)}")
    p.add_argument("--model-memory", action="store_true", help="also count the saved memory of i3d_r50(_nl5) per clip")
    p.add_argument("--json", default=None, metavar="OUT",
                   help="write the rows and ratios to this JSON file (rewritten after each variant)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the arguments, build the blocks (one small CPU step each) and models on the CPU")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = a.device == "cuda"
    a.dtype = a.dtype or ("bf16" if cuda else "fp32")
    a.iters = a.iters if a.iters is not None else (20 if cuda else 2)
    a.warmup = a.warmup if a.warmup is not None else (5 if cuda else 0)
    unknown = sorted(set(a.variants.split(",")) - set(VARIANTS))
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {list(VARIANTS)}")
    if a.iters < 1 or a.warmup < 0:
        p.error(f"--iters must be >= 1 and --warmup >= 0 (got {a.iters} and {a.warmup})")
    if cuda and not torch.cuda.is_available() and not a.dry_run:
        p.error("--device cuda: no CUDA device visible to torch")
    return a


def dry_run(a: argparse.Namespace) -> int:
    """Builds each variant's block and runs one forward + backward of it on a small CPU tensor, builds the models of
    ``--model-memory`` on the CPU, and prints the plan of a run with ``a`` (nothing timed, no GPU needed)."""
    from gnvideo.models import build_model

    channels = STAGES[a.stage][0]
    for name in a.variants.split(","):
        instantiation, implementation = VARIANTS[name]
        block = NonLocal3d(channels, instantiation=instantiation, implementation=implementation).train()
        with torch.no_grad():
            block.norm.weight.fill_(1.0)
        x = torch.randn(1, channels, 2, 4, 4, requires_grad=True)
        block(x).sum().backward()
        params = sum(p.numel() for p in block.parameters())
        print(f"{name}: NonLocal3d({channels}), {instantiation}, {implementation}; {params / 1e6:.2f} M parameters; "
              f"one CPU step on {tuple(x.shape)}")
    if a.model_memory:
        for backbone, implementation in MODEL_MEMORY_ROWS:
            model = build_model(backbone, nonlocal_implementation=implementation)
            params = sum(p.numel() for p in model.parameters())
            print(f"model memory: {backbone} ({implementation}), {params / 1e6:.2f} M parameters")
    print(f"dry run: would time {a.iters} forward + backward steps after {a.warmup + 1} warm-up steps per variant on "
          f"{a.device} ({a.dtype}), x {block_input_shape(a)}"
          + (f"; model memory of {len(MODEL_MEMORY_ROWS)} models, one clip of {a.frames} x {a.size}^2"
             if a.model_memory else "")
          + f"; json {a.json or '-'}; torch {torch.__version__}")
    return 0


def write_json(a: argparse.Namespace, device: str, rows: list[dict], ratios: dict, memory: list[dict],
               complete: bool) -> None:
    """The results so far, to ``a.json``: a run stopped at a time limit keeps the variants it measured."""
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    with open(a.json, "w") as f:
        json.dump({"device": device, "torch": torch.__version__, "complete": complete,
                   "args": {k: v for k, v in vars(a).items() if k != "child"}, "block_input": block_input_shape(a),
                   "rows": rows, "ratios": ratios, "model_memory": memory}, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse(argv)
    if a.child:
        print(json.dumps(measure(a.child, a)))
        return 0
    if a.dry_run:
        return dry_run(a)
    if a.device == "cuda":
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    shape = block_input_shape(a)
    n, c, t, h, w = shape
    queries, keys = t * h * w, t * (h // 2) * (w // 2)
    matrix_mib = n * queries * keys * (2 if a.dtype == "bf16" else 4) / MIB
    print(f"device: {device}; torch {torch.__version__}; {a.dtype}; {a.iters} steps after {a.warmup + 1} warm-up")
    print(f"{a.stage} non-local block, BN: x {shape} ({a.clips} clips x {a.frames} frames x {a.size}^2); "
          f"{queries} queries x {keys} keys per clip, one affinity matrix {matrix_mib:.0f} MiB")
    child_argv = [arg for arg in argv if arg not in ("--model-memory",)]
    if "--json" in child_argv:
        i = child_argv.index("--json")
        del child_argv[i:i + 2]
    rows = []
    for name in a.variants.split(","):
        rows.append(measure(name, a) if a.device == "cuda" else measure_in_child(name, child_argv))
        if a.json:
            write_json(a, device, rows, {}, [], complete=False)
        gc.collect()
        if a.device == "cuda":
            torch.cuda.empty_cache()
    by_name = {r["variant"]: r for r in rows}
    ratios = {}
    print(f"\n{'variant':18} {'fwd+bwd ms':>11} {'peak MiB':>9} {'saved MiB':>10} {'time/expl':>10} "
          f"{'peak/expl':>10} {'saved/expl':>11}  attention op")
    for r in rows:
        base = by_name.get(BASELINE[r["instantiation"]])
        rt = r["ms_median"] / base["ms_median"] if base else float("nan")
        rp = r["peak_mib"] / base["peak_mib"] if base and base["peak_mib"] > 0 else float("nan")
        rs = r["saved_mib"] / base["saved_mib"] if base and base["saved_mib"] > 0 else float("nan")
        if base and r is not base:
            ratios[r["variant"]] = {"vs": base["variant"], "time": rt, "peak_memory": rp, "saved_memory": rs}
        print(f"{r['variant']:18} {r['ms_median']:11.1f} {r['peak_mib']:9.0f} {r['saved_mib']:10.0f} {rt:10.2f} "
              f"{rp:10.2f} {rs:11.2f}  {r['attention_op'] or '-'}")
    if a.json and a.model_memory:
        write_json(a, device, rows, ratios, [], complete=False)
    memory = model_memory(a) if a.model_memory else []
    if memory:
        plain = memory[0]
        print(f"\nper clip of {a.frames} x {a.size}^2 in training ({a.dtype}): kept for backward"
              + (", peak of forward + backward" if plain["peak_mib_per_clip"] is not None else ""))
        for r in memory:
            line = f"  {r['backbone']:12} {r['implementation']:9} {r['saved_mib_per_clip']:6.0f} MiB"
            if r is not plain:
                line += f" (+{r['saved_mib_per_clip'] - plain['saved_mib_per_clip']:.0f})"
            if r["peak_mib_per_clip"] is not None:
                line += f", peak {r['peak_mib_per_clip']:.0f} MiB"
                if r is not plain:
                    line += f" (+{r['peak_mib_per_clip'] - plain['peak_mib_per_clip']:.0f})"
            print(line)
    if a.json:
        write_json(a, device, rows, ratios, memory, complete=True)
        print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
