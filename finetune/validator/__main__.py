"""`python -m finetune.validator status | reasons`: read-only views for operators and miners.

    python -m finetune.validator status [--state-path PATH] [--json | --plain]
    python -m finetune.validator reasons [CODE ...] [--update-doc docs/miner.md]

`status` reads the state file (never writes it) and prints the leaderboards, the models
waiting and why, the rejected ones with what to do, and the weights last computed.
`reasons` explains rejection and failure codes, or regenerates the reasons section of a doc.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from finetune.validator.reasons import print_reasons, update_doc
from finetune.validator.settings import ValidatorSettings
from finetune.validator.status import print_status


def _default_state_path() -> Path:
    # As the validator finds it: FINETUNE_STATE_PATH, else the settings' default.
    configured = os.environ.get("FINETUNE_STATE_PATH")
    return Path(configured) if configured else ValidatorSettings.model_fields["state_path"].default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m finetune.validator", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="leaderboards, waiting and rejected models, last weights")
    status.add_argument("--state-path", type=Path, default=_default_state_path(),
                        help="validator state file (default: %(default)s)")
    output = status.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the view as JSON, for scripts")
    output.add_argument("--plain", action="store_true", help="plain lines instead of tables (default off a TTY)")
    reasons = commands.add_parser("reasons", help="what a rejection or failure code means and what to do")
    reasons.add_argument("codes", nargs="*", help="codes to explain (default: all, in the order the checks run)")
    reasons.add_argument("--update-doc", type=Path, default=None, metavar="PATH",
                         help="rewrite the generated reasons section of PATH (docs/miner.md) instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "status":
        return print_status(args.state_path, as_json=args.json, plain=True if args.plain else None)
    if args.update_doc is not None:
        try:
            changed = update_doc(args.update_doc)
        except (OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"{args.update_doc}: {'updated' if changed else 'already current'}")
        return 0
    return print_reasons(args.codes)


if __name__ == "__main__":
    sys.exit(main())
