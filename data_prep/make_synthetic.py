#!/usr/bin/env python
"""Generate the synthetic motion dataset (Kinetics layout) for CPU demos and tests.

Example (``python data_prep/make_synthetic.py`` and ``python -m data_prep.make_synthetic`` take the same arguments)::

    gnvideo-make-synthetic data/synthetic --num-classes 8 --videos-per-class 40 --val-videos-per-class 10

Skips the work when ``root`` already holds a complete dataset made with the same settings.
"""

from __future__ import annotations

import argparse
import sys

from gnvideo.data.synthetic import CLASS_NAMES, make_synthetic_dataset


def _range(kind):
    def parse(text: str):
        parts = text.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}")
        return tuple(kind(p) for p in parts)

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="output directory")
    p.add_argument("--num-classes", type=int, default=8, help=f"2-{len(CLASS_NAMES)} (default 8)")
    p.add_argument("--videos-per-class", type=int, default=40, help="training clips per class (default 40)")
    p.add_argument("--val-videos-per-class", type=int, default=10, help="validation clips per class (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all CPUs; 0 = in process)")
    p.add_argument("--short-side", type=_range(int), default=(72, 96), help="LOW,HIGH pixels (default 72,96)")
    p.add_argument("--fps", type=_range(int), default=(12, 30), help="LOW,HIGH frames/s (default 12,30)")
    p.add_argument("--duration", type=_range(float), default=(1.5, 4.0), help="LOW,HIGH seconds (default 1.5,4)")
    p.add_argument("--force", action="store_true", help="regenerate even if a complete dataset exists")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = make_synthetic_dataset(
            args.root, num_classes=args.num_classes, videos_per_class=args.videos_per_class,
            val_videos_per_class=args.val_videos_per_class, seed=args.seed, workers=args.workers,
            short_side_range=args.short_side, fps_range=args.fps, duration_range=args.duration, force=args.force,
            progress=not args.no_progress,
        )
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    total = s.num_train + s.num_val
    if s.skipped:
        print(f"{s.root}: complete dataset already there ({total} videos, {len(s.label_names)} classes); skipped")
    else:
        print(f"{s.root}: wrote {s.num_train} train + {s.num_val} val videos, {len(s.label_names)} classes, "
              f"in {s.seconds:.1f} s ({total / max(s.seconds, 1e-9):.1f} videos/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
