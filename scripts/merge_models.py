#!/usr/bin/env python3
"""Merge same-architecture models (linear, task_arithmetic, ties, dare, slerp) into one.

Example:
    scripts/merge_models.py --method ties --base BASE --model A --model B \\
        --weight 1 --weight 0.5 --density 0.5 --out merged
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError  # noqa: E402
from finetune.mining.merge import OUTPUT_DTYPES, known_methods, merge_models  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    parser = FlagParser(description=__doc__)
    parser.add_argument(
        "--method", required=True, metavar="NAME", help=f"merge method: {', '.join(known_methods())}"
    )
    parser.add_argument(
        "--base", type=Path, metavar="DIR", help="base model directory (needed by task_arithmetic, ties, dare)"
    )
    parser.add_argument(
        "--model", type=Path, action="append", required=True, metavar="DIR", help="model directory; repeat"
    )
    parser.add_argument(
        "--weight", type=float, action="append", metavar="W", help="one weight per --model, in order"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (must be empty)")
    parser.add_argument(
        "--density", type=float, default=0.5, metavar="X", help="fraction kept by ties/dare, in (0, 1]"
    )
    parser.add_argument("--lambda", dest="lam", type=float, default=1.0, metavar="X", help="task-vector scale")
    parser.add_argument(
        "--t", dest="slerp_t", type=float, default=0.5, metavar="X", help="slerp position in [0, 1]"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="dare drop-mask seed")
    parser.add_argument(
        "--dtype", default="float32", choices=sorted(OUTPUT_DTYPES), help="output dtype"
    )
    parser.add_argument(
        "--tokenizer-from", type=Path, metavar="DIR", help="copy the tokenizer from this directory"
    )
    parser.add_argument(
        "--max-shard-gb", type=float, default=2.0, metavar="GB", help="output shard size limit, GiB"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace weights in a non-empty --out"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = merge_models(
            method=args.method,
            base=args.base,
            models=args.model,
            weights=args.weight,
            out_dir=args.out,
            density=args.density,
            lam=args.lam,
            slerp_t=args.slerp_t,
            seed=args.seed,
            dtype=args.dtype,
            tokenizer_from=args.tokenizer_from,
            max_shard_bytes=int(args.max_shard_gb * 1024**3),
            overwrite=args.overwrite,
        )
    except FinetuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"{report.method}: {report.tensors_merged} tensors merged, {report.output_bytes / 1e6:.1f} MB "
        f"in {len(report.output_files)} file(s), {report.elapsed_s:.1f}s -> {report.out_dir}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
