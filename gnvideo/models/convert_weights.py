"""``gnvideo convert-weights TRUSTED_FILE OUT.safetensors``: a trusted checkpoint's model tensors as safetensors.

gnvideo reads checkpoints only as tensors and plain types (:mod:`gnvideo.models.checkpoint_io`) and refuses a file
whose pickle names other functions or classes, because unpickling it could run code. When you trust such a file
(e.g. a checkpoint of another code base whose hyperparameters are Python objects), this command unpickles it in full
once, on purpose, and writes its model tensors to a ``.safetensors`` file that every weights option reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="gnvideo convert-weights",
        description="Write the model tensors of a checkpoint you trust to a .safetensors file, which every gnvideo "
                    "weights option reads without running code.",
        epilog="Only for a file you trust: reading it unpickles it in full, which can run code it names.")
    parser.add_argument("source", help="the checkpoint to convert (.ckpt, .pth, .pyth, .bin, ...)")
    parser.add_argument("target", help="the file to write; its name ends in .safetensors")
    args = parser.parse_args(None if argv is None else list(argv))

    from gnvideo.errors import ConfigError
    from gnvideo.models.checkpoint_io import convert_to_safetensors

    try:
        count = convert_to_safetensors(args.source, args.target)
    except ConfigError as err:
        print(f"gnvideo convert-weights: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {count} tensors of {args.source} to {args.target} (tensors only: safe to pass to "
          f"--model.init_from, --model.pretrained_2d or --model.pretrained_2d_file)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
