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

from pydantic_settings import CliApp  # noqa: E402
from rich.logging import RichHandler  # noqa: E402

from finetune.errors import ConfigError  # noqa: E402
from finetune.validator.build import run_validator  # noqa: E402
from finetune.validator.settings import ValidatorSettings  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    settings = CliApp.run(ValidatorSettings, cli_args=sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s",
                        handlers=[RichHandler(show_path=False)])
    try:
        return run_validator(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
