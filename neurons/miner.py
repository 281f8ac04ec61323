#!/usr/bin/env python3
"""The miner: fine-tune a model for a competition, score it locally, upload it if it wins.

All behaviour lives in `finetune.mining`; see docs/miner.md.

    python neurons/miner.py --model base/ --competition LOCAL_INSTRUCT --out runs/a --schedule local
    python neurons/miner.py --model base/ --competition INSTRUCT_8B --out runs/b --lora \\
        --data databricks/databricks-dolly-15k --upload-if-better --repo me/model \\
        --wallet.name miner --wallet.hotkey default
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.errors import FinetuneError  # noqa: E402
from finetune.mining.compare import run_miner  # noqa: E402
from finetune.mining.settings import MinerSettings, parse_settings  # noqa: E402
from finetune.mining.upload import describe_error  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(MinerSettings, sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        report = run_miner(settings)
    except (FinetuneError, ValueError) as error:
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    train = report.train
    print(
        f"best score {train.best_score:.6g} at step {train.best_step} "
        f"(start {train.initial_score:.6g}; {train.steps} steps, stop: {train.stop}) -> {train.best_dir}"
    )
    if report.comparison is not None:
        print(f"upload: {report.comparison.decision.upload} ({report.comparison.decision.reason})")
    if report.upload is not None:
        print(f"committed {report.upload.commitment} at block {report.upload.block}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
