"""Inspect a preset: ``python -m gnvideo.models i3d_r50 --norm gn --frames 32 --size 224``.

Prints the parameter count, the output shape of a forward pass on zeros (batch 1, eval mode, no grad), the norm
layers used (kind and count) and the non-local blocks (where, which kind, their parameters).
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from typing import Any

import torch

from gnvideo.models.nonlocal_block import NonLocal3d
from gnvideo.models.norms import NORM_KINDS, is_norm_layer
from gnvideo.models.presets import PRESETS, build_model


def _parse_option(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--norm-option must look like key=value, got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key.strip(), value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gnvideo.models", description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(PRESETS), help="preset name")
    parser.add_argument("--norm", default="bn", choices=NORM_KINDS)
    parser.add_argument("--norm-option", action="append", type=_parse_option, default=[], metavar="KEY=VALUE",
                        help="norm option, repeatable (e.g. num_groups=32)")
    parser.add_argument("--frames", type=int, default=8, help="clip length T (frames)")
    parser.add_argument("--size", type=int, default=224, help="spatial size H = W (pixels)")
    parser.add_argument("--num-classes", type=int, default=400)
    args = parser.parse_args(argv)

    model = build_model(args.name, num_classes=args.num_classes, norm=args.norm, norm_options=dict(args.norm_option))
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.zeros(1, 3, args.frames, args.size, args.size)
    with torch.no_grad():
        features = model.forward_features(x)
        logits = model.head(features)
    norms = Counter(type(m).__name__ for m in model.modules() if is_norm_layer(m))
    fused = Counter(getattr(m, "activation", "none") for m in model.modules() if is_norm_layer(m))
    print(f"model: {args.name}  norm: {args.norm} {dict(args.norm_option) or ''}")
    print(f"parameters: {params:,} ({params / 1e6:.2f}M)")
    print(f"input: {tuple(x.shape)}  res5 features: {tuple(features.shape)}  output: {tuple(logits.shape)}")
    print("norm layers: " + ", ".join(f"{name} x{count}" for name, count in norms.items()))
    if fused.get("relu"):
        print(f"fused norm+relu: {fused['relu']}")
    nonlocal_blocks = {name: m for name, m in model.named_modules() if isinstance(m, NonLocal3d)}
    if nonlocal_blocks:
        kinds = sorted({f"{m.instantiation}, pool {m.pool_size}" for m in nonlocal_blocks.values()})
        nl_params = sum(p.numel() for m in nonlocal_blocks.values() for p in m.parameters())
        print(f"non-local blocks: {len(nonlocal_blocks)} ({'; '.join(kinds)}; {nl_params:,} parameters): "
              + ", ".join(nonlocal_blocks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
