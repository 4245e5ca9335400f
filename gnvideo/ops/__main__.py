"""Command line: ``python -m gnvideo.ops build [--cpu] [--verbose] [--dry-run]`` and ``python -m gnvideo.ops info``."""

from __future__ import annotations

import argparse
import sys
import time

import torch

from gnvideo.ops import _extension, backend


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m gnvideo.ops", description="gnvideo GroupNorm extension")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="compile (or reuse the cached build of) the extension and load it")
    build.add_argument("--cpu", action="store_true", help="build only the CPU part (no nvcc needed)")
    build.add_argument("--verbose", action="store_true", help="print compiler commands")
    build.add_argument("--dry-run", action="store_true",
                       help="print what would be compiled (sources, architectures, build directory); compile nothing")
    sub.add_parser("info", help="print which GroupNorm implementation runs and why")
    args = parser.parse_args(argv)

    if args.command == "build" and args.dry_run:
        plan = _extension.build_plan(cuda=False if args.cpu else None)
        for key, value in plan.items():
            print(f"{key}: {value}")
        if plan["missing_sources"] or not plan["ninja"]:
            print("cannot build: " + ("missing sources" if plan["missing_sources"] else "ninja is not installed"))
            return 1
        return 0
    if args.command == "build":
        ok, why = _extension.can_build_cuda()
        print(f"CUDA part: {'yes' if ok and not args.cpu else 'no'} ({'--cpu' if args.cpu else why})")
        start = time.perf_counter()
        variant = _extension.load(cuda=False if args.cpu else None, verbose=args.verbose)
        print(f"loaded {variant} extension from {_extension.build_dir()} in {time.perf_counter() - start:.1f} s")
    else:
        print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cache root {_extension.cache_root()}")
    print(backend())
    return 0


if __name__ == "__main__":
    sys.exit(main())
