#!/usr/bin/env python3
"""Build a tiny causal LM with its own BPE tokenizer and chat template, offline."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.tiny_model import ARCHITECTURES, build_tiny_model  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = FlagParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="weight initialisation seed")
    parser.add_argument("--arch", default="llama", choices=ARCHITECTURES, help="model architecture")
    parser.add_argument("--hidden", type=int, default=64, metavar="N", help="hidden size")
    parser.add_argument("--layers", type=int, default=2, metavar="N", help="decoder layers")
    args = parser.parse_args(argv)
    out = build_tiny_model(args.out, seed=args.seed, arch=args.arch, hidden=args.hidden, layers=args.layers)
    print(f"tiny {args.arch} model written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
