#!/usr/bin/env python3
"""The validator daemon. All behaviour lives in `finetune.validator`; see docs/validator.md.

    python neurons/validator.py --wallet.name vali --wallet.hotkey default --netuid 37
    python neurons/validator.py --chain devnet:out/devnet.sqlite --hub dir:out/hub --schedule local --offline
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydantic import ValidationError  # noqa: E402
from pydantic_settings import CliApp, SettingsError  # noqa: E402
from rich.logging import RichHandler  # noqa: E402

from finetune.errors import ConfigError  # noqa: E402
from finetune.validator.report import make_console  # noqa: E402
from finetune.validator.settings import ValidatorSettings  # noqa: E402


def _settings(argv: list[str]) -> ValidatorSettings | None:
    """Parse flags and environment; print every problem on its own line (None if any)."""
    try:
        return CliApp.run(ValidatorSettings, cli_args=argv)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]).replace("_", "-")
            print(f"error: --{where}: {error['msg']} (got {error.get('input')!r})", file=sys.stderr)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return None


def main(argv: list[str] | None = None) -> int:
    """Parse settings, configure logging once, run the validator. Returns the exit code."""
    settings = _settings(sys.argv[1:] if argv is None else argv)
    if settings is None:
        return 2
    try:
        # The log console, like the report console, survives a closed stream (no SystemExit).
        logging.basicConfig(level=settings.log_level.upper(), format="%(message)s",
                            handlers=[RichHandler(show_path=False, console=make_console(stderr=True))])
    except ValueError as exc:  # an unknown level name
        print(f"error: --log-level: {exc}", file=sys.stderr)
        return 2
    from finetune.validator.build import run_validator  # torch and friends: not needed for --help

    try:
        return run_validator(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
