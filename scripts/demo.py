#!/usr/bin/env python3
"""The whole subnet on one machine, offline: devnet chain, directory hub, miners, validator.

    make demo      # or: python scripts/demo.py --out out/demo
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
    parser.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR",
                        help="output folder (its work/ folder is wiped)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from finetune.demo import run_demo
    from finetune.eval.loading import quiet_library_output

    quiet_library_output()  # as the validator does: no library bars and notices between the steps

    result = run_demo(args.out)
    print(f"result written to {args.out / 'result.json'}")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
