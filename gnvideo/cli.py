"""``gnvideo`` command line: LightningCLI for fit/validate/test/predict, plus ``report`` and ``demo``.

Examples::

    gnvideo fit --config configs/kinetics400/i3d_r50_gn_32x2_8clips.yaml
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --data.clips_per_device 4 --trainer.max_steps 50
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --ckpt_path last      # resume the latest run
    gnvideo test --config configs/synthetic/tiny_r3d_gn.yaml --ckpt_path best     # writes results.json
    gnvideo predict --config configs/synthetic/tiny_r3d_gn.yaml --data.predict_files [a.mp4,b.mp4] --ckpt_path X
    gnvideo fit --config configs/synthetic/tiny_r3d_gn.yaml --print_config
    gnvideo report runs/ --paper --plot table8.png

Runs live in ``{trainer.default_root_dir}/{run_name}/version_N`` (fit) or ``.../{subcommand}_N``; ``run_name``
defaults to the stem of the last ``--config`` file. Each run folder holds ``config.yaml`` (resolved config),
``metrics.csv``, TensorBoard events and ``checkpoints/``: the best by ``val/top1`` (option group ``--checkpoint``) and
``last.ckpt``, written after each validation and every ``--last_checkpoint.every_n_train_steps`` (1000) steps.
``--ckpt_path last`` and ``--ckpt_path best`` resolve to the newest run of ``run_name`` that has such a checkpoint;
``fit --ckpt_path last`` resumes there (exact step, optimizer and LR-scheduler state) and keeps logging in that folder.
``test`` writes ``results.json`` beside the checkpoint (or in its own run folder without one); ``predict`` prints the
top-5 classes per video and writes ``predictions.json``. Config mistakes stop before training with the key named.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gnvideo.api import GNVideoCLI, make_cli

__all__ = ["GNVideoCLI", "main"]


def main(args: Sequence[str] | None = None) -> int:
    """Run ``gnvideo`` with ``args`` (default: ``sys.argv[1:]``)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "report":
        from gnvideo.report import main as report_main

        return report_main(argv[1:])
    if argv and argv[0] == "demo":
        from gnvideo.demo import main as demo_main

        return demo_main(argv[1:]) or 0
    if argv[:1] in (["-h"], ["--help"]):
        print("gnvideo report RUN_DIR... [--paper] [--plot OUT.png] [--chance]   BN-vs-GN table from results.json\n"
              "gnvideo demo ...                                                  end-to-end CPU demo\n")
    make_cli(None if args is None else argv, run=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
