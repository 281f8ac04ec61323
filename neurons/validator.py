#!/usr/bin/env python3
"""The validator daemon. All behaviour lives in `finetune.validator`; see docs/validator.md.

    python neurons/validator.py --wallet.name vali --wallet.hotkey default --netuid 37
    python neurons/validator.py --chain devnet:out/devnet.sqlite --hub dir:out/hub --schedule local --offline

Exit codes: 0 stopped cleanly; 2 a bad setting (one line per problem, nothing was scored).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.logging import RichHandler  # noqa: E402

from finetune.errors import ConfigError  # noqa: E402
from finetune.validator.cli import parse_validator_settings  # noqa: E402
from finetune.validator.report import make_console  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse and check every setting, configure logging once, run the validator.

    Returns:
        The exit code: 0 after a clean stop, 2 for a bad setting (printed one per line).
    """
    try:
        settings = parse_validator_settings(sys.argv[1:] if argv is None else argv)
    except SystemExit as exit_:  # --help (0), or the problems are printed already (2)
        return int(exit_.code or 0)
    # The log console, like the report console, survives a closed stream (no SystemExit).
    logging.basicConfig(level=settings.log_level, format="%(message)s",
                        handlers=[RichHandler(show_path=False, console=make_console(stderr=True))])
    # torch and friends: not needed for --help
    from finetune.eval.loading import quiet_library_output
    from finetune.validator.build import run_validator

    quiet_library_output()  # library bars and notices; the scoring child does the same

    try:
        return run_validator(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
