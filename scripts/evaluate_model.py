#!/usr/bin/env python3
"""Score a local model directory on a competition, exactly as a validator would.

Exit codes: 0 scored; 1 the model breaks the competition's constraints (scored anyway with
--no-constraints); 2 bad input (missing directory, not a causal LM, unknown competition).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import competitions  # noqa: E402
from finetune.competition import ModelConstraints  # noqa: E402
from finetune.datasets import DataConfig  # noqa: E402
from finetune.errors import FinetuneError  # noqa: E402
from finetune.eval import ModelEvaluation, evaluate_model, prepare_task_data  # noqa: E402
from finetune.storage import RevisionInfo, model_dir_violations  # noqa: E402


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="local model directory")
    parser.add_argument("--competition", required=True, help="competition name or id")
    parser.add_argument("--offline", action="store_true", help="use local/bundled data only")
    parser.add_argument("--data-dir", type=Path, help="folder of local <dataset>.jsonl files")
    parser.add_argument("--seed", type=int, default=0, help="round seed for the eval data")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    parser.add_argument("--batch-tokens", type=int, default=8192, help="tokens per batch")
    parser.add_argument("--samples", type=int, help="samples per task instead of the task's count")
    parser.add_argument(
        "--no-constraints", action="store_true", help="score even if constraints are broken"
    )
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser.parse_args(argv)


def _violations(model_dir: Path, constraints: ModelConstraints) -> list[str]:
    """Every constraint the directory breaks, as ``"reason: message"``.

    The validator checks the revision's size before downloading; here it is the size of the
    files an upload would push.
    """
    found = model_dir_violations(model_dir, constraints)
    size = RevisionInfo.of_folder(model_dir).total_bytes
    if size > constraints.max_bytes:
        found.insert(0, f"too_large: {size:,} bytes, over the {constraints.max_bytes:,} byte limit")
    return found


def _print_table(evaluation: ModelEvaluation) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from finetune.text import printable

    table = Table(title=f"{evaluation.competition} (seed {evaluation.seed})")
    for column in ("task", "raw", "normalised", "weighted", "samples"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for name, score in evaluation.tasks.items():
        table.add_row(
            name, f"{score.raw:.4f}", f"{score.normalized:.4f}", f"{score.weighted:.4f}",
            str(score.samples),
        )
    for name, reason in evaluation.dropped.items():
        table.add_row(name, "dropped", Text(printable(reason)), "", "")
    table.add_row("total", "", "", f"{evaluation.total:.4f}", "", style="bold")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        competition = competitions.get_competition(args.competition)
        if not args.model.is_dir():
            raise FileNotFoundError(f"model directory {args.model} does not exist")
        violations = _violations(args.model, competition.constraints)
        for violation in violations:
            print(f"constraint violated: {violation}", file=sys.stderr)
        if violations and not args.no_constraints:
            print("the model breaks the competition's constraints (use --no-constraints to "
                  "score it anyway)", file=sys.stderr)
            return 1
        counts = {t.name: args.samples for t in competition.tasks} if args.samples else None
        data = prepare_task_data(
            competition,
            seed=args.seed,
            config=DataConfig(offline=args.offline, data_dir=args.data_dir),
            sample_counts=counts,
        )
        evaluation = evaluate_model(
            args.model,
            competition,
            data,
            device=args.device,
            batch_tokens=args.batch_tokens,
            progress=not args.no_progress,
        )
    except (FinetuneError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_table(evaluation)
    if args.json:
        result = {**evaluation.to_json(), "violations": violations}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
