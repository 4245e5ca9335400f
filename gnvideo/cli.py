"""``gnvideo`` command: ``fit|validate|test|predict`` (LightningCLI, :mod:`gnvideo.training.runner`), ``report``,
``demo`` and ``convert-weights``.

This module only dispatches: ``report`` to :mod:`gnvideo.report`, ``demo`` to :mod:`gnvideo.demo`,
``convert-weights`` to :mod:`gnvideo.models.convert_weights`, the rest to
:func:`gnvideo.training.runner.build_cli`; it is the top layer. Run folders, resume and result files are described in
:mod:`gnvideo.training.runner`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

USAGE = """usage: gnvideo COMMAND [options]

Train and compare 3D CNNs with BatchNorm and GroupNorm on Kinetics-style video datasets.

commands:
  fit        train a model (LightningCLI; resume with --ckpt_path last)
  validate   score a checkpoint on the validation split
  test       multi-view test of a checkpoint; writes test_N/results.json in the run folder
  predict    top-5 classes of videos (--data.predict_files)
  report     BN-vs-GN table (and plot) from results.json files: gnvideo report RUN_DIR... [--paper] [--plot OUT]
  demo       the BN-vs-GN experiment end to end on a built-in synthetic dataset
  convert-weights  a checkpoint you trust -> .safetensors (gnvideo reads no file whose unpickling could run code)

gnvideo COMMAND --help lists a command's options; e.g.
  gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --trainer.max_epochs 2
  gnvideo fit --config configs/kinetics400/base.yaml --config configs/kinetics400/norm_gn.yaml \\
      --config configs/kinetics400/i3d_r50_gn_32x2_8clips.yaml"""


def main(args: Sequence[str] | None = None) -> int:
    """Run ``gnvideo`` with ``args`` (default: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "report":
        from gnvideo.report import main as report_main

        return report_main(argv[1:])
    if argv and argv[0] == "demo":
        from gnvideo.demo import main as demo_main

        return demo_main(argv[1:]) or 0
    if argv and argv[0] == "convert-weights":
        from gnvideo.models.convert_weights import main as convert_main

        return convert_main(argv[1:])
    if not argv or argv[:1] in (["-h"], ["--help"]):  # answered without importing Lightning
        print(USAGE)
        return 0 if argv else 2
    from gnvideo.training.runner import build_cli

    build_cli(None if args is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
