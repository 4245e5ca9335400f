"""``gnvideo`` command: ``fit|validate|test|predict`` (LightningCLI, :mod:`gnvideo.runner`), ``report`` and ``demo``.

This module only dispatches: ``report`` to :mod:`gnvideo.report`, ``demo`` to :mod:`gnvideo.demo`, the rest to
:func:`gnvideo.runner.build_cli`. Neither the demo nor the runner imports it (no import cycle); run folders, resume
and result files are described in :mod:`gnvideo.runner`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


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
    from gnvideo.runner import build_cli

    build_cli(None if args is None else argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
