#!/usr/bin/env python3
"""Upload a model and commit it on chain: private push, hash, commit, read back, then public.

    python scripts/upload_model.py --model out/best --repo me/model --competition INSTRUCT_8B \\
        --wallet.name miner --wallet.hotkey default
    python scripts/upload_model.py --model out/best --repo me/tiny --competition LOCAL_INSTRUCT \\
        --chain devnet:out/devnet.sqlite --hub dir:out/hub --schedule local --netuid 1

Exit codes: 0 committed; 2 anything went wrong (one line on stderr says what and what to do).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError  # noqa: E402
from finetune.mining.settings import UploadSettings, parse_settings  # noqa: E402
from finetune.mining.upload import describe_error, run_upload  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(UploadSettings, sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(message)s")
    try:
        report = run_upload(settings)
    except (FinetuneError, OSError, ValueError) as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    print(f"committed {report.commitment} at block {report.block}; {report.repo_id} is public")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
