#!/usr/bin/env python3
"""The whole subnet on one machine, offline: devnet chain, directory hub, miners, validator.

    make demo        # or: python scripts/demo.py --out out/demo
    make demo-seeds  # the seeds' two competitions: python scripts/demo.py --seeds --out out/demo-seeds
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
for name, value in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
                    "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    from finetune.validator.cli import FlagParser

    parser = FlagParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder, its work/ folder wiped (default: out/demo, or out/demo-seeds with --seeds)")
    parser.add_argument("--seeds", action="store_true",
                        help="a round of each of the seeds' competitions (1 GPU / 1 day, merging) instead")
    parser.add_argument("--quick", action="store_true", help="--seeds with fewer training steps")
    args = parser.parse_args(argv)
    args.out = args.out or Path("out/demo-seeds" if args.seeds else "out/demo")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from finetune.demo import run_demo
    from finetune.eval.loading import quiet_library_output

    quiet_library_output()  # as the validator does: no library bars and notices between the steps

    if args.seeds:
        from finetune.demo_seeds import run_seeds_demo

        result = run_seeds_demo(args.out, quick=args.quick)
    else:
        result = run_demo(args.out)
    print(f"result written to {args.out / 'result.json'}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
