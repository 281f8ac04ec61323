#!/usr/bin/env python3
"""Score a local model directory on a competition, exactly as a validator would.

Exit codes: 0 scored; 1 the model breaks the competition's constraints (scored anyway with
--no-constraints) or breaks its scoring (a validator scores it inf); 2 bad input: a bad flag value, a missing directory or config.json, not a
causal LM, an unknown competition (one line on stderr says which).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import competitions  # noqa: E402
from finetune.competition import Aggregation, ModelConstraints  # noqa: E402
from finetune.datasets import DataConfig  # noqa: E402
from finetune.errors import FinetuneError  # noqa: E402
from finetune.eval import ModelEvaluation, evaluate_model, prepare_task_data  # noqa: E402
from finetune.protocol import PROTOCOLS, ScoringProtocol  # noqa: E402
from finetune.scoring.aggregate import reference_score  # noqa: E402
from finetune.storage import RevisionInfo, model_dir_violations  # noqa: E402
from finetune.validator.cli import FlagParser  # noqa: E402
from finetune.validator.settings import check_device  # noqa: E402


def _count(text: str) -> int:
    """A flag value that must be a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number (got {text})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {text})")
    return value


def _device(text: str) -> str:
    """A torch device this machine has; ``auto`` is cuda when usable, else cpu."""
    try:
        device = check_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (got {text})") from None
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = FlagParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1])
    parser.add_argument("--model", required=True, type=Path, metavar="DIR", help="local model directory")
    parser.add_argument("--competition", required=True, metavar="NAME", help="competition name or id")
    parser.add_argument("--offline", action="store_true", help="use local/bundled data only")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of local <dataset>.jsonl files")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="round seed for the eval data")
    parser.add_argument("--device", type=_device, default="cpu", help="auto (cuda if usable, else cpu), cpu, cuda or cuda:N")
    parser.add_argument("--batch-tokens", type=_count, default=8192, metavar="N", help="token budget of one batch")
    parser.add_argument("--eval-samples", type=_count, metavar="N",
                        help="at most N samples per task, as the validator's --eval-samples "
                        "(default: each task's own count)")
    for alias in ("--samples", "--max-samples"):  # the names other tools used: kept, not shown
        parser.add_argument(alias, dest="eval_samples", type=_count, help=argparse.SUPPRESS)
    parser.add_argument(
        "--no-constraints", action="store_true", help="score even if constraints are broken"
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write the results to this JSON file")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), metavar="NAME",
                        help="score under this protocol (default: the one the competition's schedule "
                        "period runs: reference-3.1 on mainnet, next locally)")
    parser.add_argument("--tokenizer-dir", type=Path, metavar="DIR",
                        help="where a fixed tokenizer (Xenova/gpt-4) is kept (default: ~/.finetune/tokenizers)")
    return parser.parse_args(argv)


def _check_model_dir(model_dir: Path) -> None:
    """Bad input (exit 2) rather than a broken constraint: there is no model here at all."""
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: config.json is missing (is this a model directory?)")


def _violations(model_dir: Path, constraints: ModelConstraints, protocol: ScoringProtocol) -> list[str]:
    """Every constraint the directory breaks, as ``"reason: message"``, by the protocol's rules.

    The validator checks the revision's size before downloading; here it is the size of the
    files an upload would push.
    """
    found = model_dir_violations(model_dir, constraints, checks=protocol.checks)
    size = RevisionInfo.of_folder(model_dir).total_bytes
    if size > constraints.max_bytes:
        found.insert(0, f"too_large: {size:,} bytes, over the {constraints.max_bytes:,} byte limit")
    return found


def _validator_total(evaluation: ModelEvaluation, competition, protocol: ScoringProtocol) -> float:
    """The score a validator of `protocol` sums from these task scores (the reference sums
    them its own way: NaN stays NaN rather than failing the model)."""
    if protocol.weights.scores != "reference":
        return evaluation.total
    raws = {name: score.raw for name, score in evaluation.tasks.items()}
    return reference_score(raws, competition.tasks, evaluation.dropped)


def _print_table(evaluation: ModelEvaluation, helm: bool) -> None:
    """Each task's scores, and why a failed one gave none. A HELM-ranked competition uses only
    the raw scores (against the other models'), so it shows no weighted column and no total."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from finetune.text import printable

    failures = any(score.failure for score in evaluation.tasks.values())
    table = Table(title=f"{evaluation.competition} (seed {evaluation.seed})")
    numbers = ("raw",) if helm else ("raw", "normalised", "weighted")
    for column in ("task", *numbers, "samples", *(("failure",) if failures else ())):
        table.add_column(column, justify="left" if column in ("task", "failure") else "right")
    for name, score in evaluation.tasks.items():
        values = [score.raw] if helm else [score.raw, score.normalized, score.weighted]
        why = (Text(printable(score.failure)),) if failures else ()
        table.add_row(name, *(f"{v:.4f}" for v in values), str(score.samples), *why)
    for name, reason in evaluation.dropped.items():
        table.add_row(name, "dropped", Text(printable(reason)))
    if not helm:
        table.add_row("total", "", "", f"{evaluation.total:.4f}", style="bold")
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    """Check, then score. Returns the exit code (see the module docstring)."""
    try:
        args = _parse(argv)
    except SystemExit as exit_:  # --help (0), or a bad flag, already printed on one line (2)
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.no_progress:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    try:
        competition = competitions.get_competition(args.competition)
        protocol = PROTOCOLS[args.protocol] if args.protocol else competitions.protocol_for(competition)
        _check_model_dir(args.model)
        violations = _violations(args.model, competition.constraints, protocol)
        for violation in violations:
            print(f"constraint violated: {violation}", file=sys.stderr)
        if violations and not args.no_constraints:
            print("the model breaks the competition's constraints (use --no-constraints to "
                  "score it anyway)", file=sys.stderr)
            return 1
        # As a validator's --eval-samples: a cap, never more than the task's own count.
        counts = ({t.name: min(t.samples, args.eval_samples) for t in competition.tasks}
                  if args.eval_samples else None)
        data = prepare_task_data(
            competition,
            seed=args.seed,
            config=DataConfig(offline=args.offline, data_dir=args.data_dir),
            sample_counts=counts,
            rules=protocol.data,
        )
        evaluation = evaluate_model(
            args.model,
            competition,
            data,
            device=args.device,
            batch_tokens=args.batch_tokens,
            progress=not args.no_progress,
            rules=protocol.eval,
            tokenizer_dir=args.tokenizer_dir or Path("~/.finetune/tokenizers").expanduser(),
        )
    except (FinetuneError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the model broke the scoring: a validator scores it inf
        from finetune.text import printable

        print(f"error: scoring failed ({type(e).__name__}: {printable(e)}); a validator would score this "
              "model inf", file=sys.stderr)
        return 1
    helm = competition.aggregation is Aggregation.HELM
    total = _validator_total(evaluation, competition, protocol)
    if helm:
        print(f"protocol {protocol.name}: HELM ranking: each task's raw score is ranked against the other "
              "models' (task weights and a total are not used)")
        if not math.isfinite(total):
            print("a task gave no score: a validator counts the model as failed (no weight this round)")
    else:
        print(f"protocol {protocol.name}: score {total:.6f} (what a validator of that protocol computes "
              f"for seed {args.seed})")
    _print_table(evaluation, helm)
    if args.json:
        result = {**evaluation.to_json(), "violations": violations, "protocol": protocol.name,
                  "aggregation": competition.aggregation.value, "validator_score": None if helm else total}
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
