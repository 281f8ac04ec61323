"""Console tables and metric records for a round. Presentation only: no decisions here.

Every cell that can hold text a miner wrote (repo ids, commitments, rejection details, worker
failure messages) is a `rich.text.Text` built from `finetune.text.printable`, so it is shown
as written and never parsed as console markup. Printing goes through `show`, which never
raises: a report that cannot be printed costs a warning, never a round, its state or its
weights (the loop prints only after both are saved).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from finetune.text import printable

if TYPE_CHECKING:
    from finetune.validator.round import RoundResult
    from finetune.validator.state import TrackedModel

logger = logging.getLogger(__name__)


class ValidatorConsole(Console):
    """A console whose output can break without ending the process.

    rich's own reaction to a closed stdout (a pager quit, a dead pm2 log pipe) is
    `SystemExit(1)`, which escapes every `except Exception` in a daemon. Here the console
    goes quiet instead, and says so once in the log.
    """

    def on_broken_pipe(self) -> None:
        self.quiet = True
        try:  # later writes to the same descriptor (print, warnings) must not fail either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.file.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a real descriptor (a StringIO): quiet is enough
        logger.warning("console output is broken (closed pipe); the round tables are no longer printed")


def make_console(**kwargs: Any) -> ValidatorConsole:
    """The console the validator prints its reports to (`rich.console.Console` arguments)."""
    return ValidatorConsole(**kwargs)


def show(console: Console, *renderables: RenderableType, **options: Any) -> bool:
    """Print report output; any failure is logged, never raised. Returns whether it printed."""
    try:
        console.print(*renderables, **options)
        return True
    except (Exception, SystemExit):  # noqa: BLE001 - presentation never stops the validator;
        # SystemExit: a plain rich Console's answer to a broken pipe (see ValidatorConsole).
        logger.exception("could not print a report; the round and its weights are unaffected")
        return False


def cell(value: object, limit: int = 120) -> Text:
    """One table cell of untrusted text: escaped, bounded, never markup."""
    return Text(printable(value, limit))


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def failure_code(failure: str) -> str:
    """The short code of a task failure (``"degenerate: 12 of 20 ..."`` -> ``"degenerate"``)."""
    return failure.split(":", 1)[0].strip()


def _task_cell(raw: float, normalized: float, failure: str, digits: int, sep: str = " ") -> str:
    """``raw/normalised``, and the failure's code when the task gave no score: ``inf/1.000 (degenerate)``."""
    text = f"{_fmt(raw, digits)}/{_fmt(normalized, digits)}"
    return f"{text}{sep}({printable(failure_code(failure), 40)})" if failure else text


def _failures_note(model) -> str:
    return "; ".join(f"{name}: {failure}" for name, failure in sorted(model.task_failures.items()))


def _helm(result: RoundResult) -> bool:
    return getattr(result, "ranking", "win_rate") == "helm"


def _win_rate_cell(model, name: str) -> str:
    """HELM: the task's raw score and the model's mean win rate there: ``0.731 (wr 0.50)``."""
    raw, _ = model.tasks.get(name, (math.nan, math.nan))
    rate = model.task_win_rates.get(name)
    text = f"{_fmt(raw, 3)} (wr {_fmt(rate, 2)})"
    failure = model.task_failures.get(name, "")
    return f"{text} ({printable(failure_code(failure), 40)})" if failure else text


def efficiency_note(submission: Mapping[str, str | float]) -> str:
    """A submission's declared figures, for people: ``ties 0.4s 312 MiB`` or ``base org/x@1234``."""
    if not submission:
        return ""
    if submission.get("kind") == "merge":
        memory = float(submission.get("peak_memory_bytes", 0.0)) / 2**20
        recal = f" +recal {submission['recalibration']}" if submission.get("recalibration") else ""
        return f"{submission.get('method', '?')} {float(submission.get('total_seconds', 0.0)):.1f}s {memory:.0f} MiB{recal}"
    return f"base {submission.get('base', '?')} {float(submission.get('train_seconds', 0.0)):.0f}s"


def round_table(result: RoundResult) -> Table:
    """uid, repo, score, epsilon advantage, win rate, weights and per-task raw/normalised.

    Under HELM ranking (SPEC §9) the ranking column is the HELM score (the product of the
    per-task mean win rates) and each task shows its raw score with the model's win rate there,
    plus the submission's declared figures: the table says why the winner won.
    """
    helm = _helm(result)
    task_names = sorted({name for m in result.models for name in m.tasks})
    title = (f"{result.competition_name} (id {result.competition_id}) "
             f"window {result.window_block} seed {result.seed:x}" + (" HELM ranking" if helm else ""))
    table = Table(title=cell(title))
    headers = ("uid", "repo", "block", "score", "HELM" if helm else "win rate", "step", "weight")
    if not helm:
        headers = (*headers[:4], "eps adv", *headers[4:])
    for header in headers:
        table.add_column(header, justify="left" if header == "repo" else "right")
    for name in task_names:
        table.add_column(cell(f"{name} raw (win rate)" if helm else f"{name} raw/norm"), justify="right")
    if any(m.submission for m in result.models):
        table.add_column("submission")
    table.add_column("note")
    for model in sorted(result.models, key=lambda m: (-result.ema.get(m.hotkey, 0.0), m.score)):
        cells: list[RenderableType] = [
            str(model.uid),
            cell(f"{model.repo_id}@{model.revision[:7]}", 60),
            str(model.block),
            _fmt(model.score),
            *([] if helm else [_fmt(model.epsilon_advantage, 3)]),
            _fmt(model.win_rate, 3),
            _fmt(result.step_weights.get(model.hotkey, 0.0), 3),
            _fmt(result.ema.get(model.hotkey, 0.0), 3),
        ]
        for name in task_names:
            raw, normalized = model.tasks.get(name, (math.nan, math.nan))
            cells.append(cell(_win_rate_cell(model, name) if helm
                              else _task_cell(raw, normalized, model.task_failures.get(name, ""), 3)))
        if any(m.submission for m in result.models):
            cells.append(cell(efficiency_note(model.submission), 80))
        # A model's own failure names its failed tasks already; a model that still scored
        # (a capped task's failure counts 1) says here which task failed and why.
        cells.append(cell(model.reason or _failures_note(model), 200))
        table.add_row(*cells)
    if result.dropped_tasks:
        table.caption = cell("dropped tasks: " + ", ".join(f"{k} ({v})" for k, v in result.dropped_tasks.items()),
                             300)
    return table


def weights_table(weights_by_uid: Mapping[int, float], hotkeys: Mapping[int, str]) -> Table:
    table = Table(title="weights to set")
    table.add_column("uid", justify="right")
    table.add_column("hotkey")
    table.add_column("weight", justify="right")
    for uid, weight in sorted(weights_by_uid.items(), key=lambda kv: -kv[1]):
        table.add_row(str(uid), cell(hotkeys.get(uid, "?"), 12), f"{weight:.4f}")
    return table


def rejections_table(models: Mapping[str, TrackedModel]) -> Table:
    table = Table(title="rejected models")
    for header in ("uid", "hotkey", "repo", "reason", "detail"):
        table.add_column(header)
    for model in sorted(models.values(), key=lambda m: m.uid):
        if model.status == "rejected":
            table.add_row(str(model.uid), cell(model.hotkey, 12), cell(model.repo_id, 60),
                          cell(model.reason, 40), cell(model.detail, 80))
    return table


def round_record(result: RoundResult) -> dict[str, Any]:
    """A flat record for metric sinks (wandb, JSONL)."""
    record: dict[str, Any] = {
        "competition_id": result.competition_id,
        "window_block": result.window_block,
        "seed": result.seed,
    }
    for model in result.models:
        prefix = f"uid_{model.uid}"
        record[f"{prefix}/score"] = model.score if math.isfinite(model.score) else None
        record[f"{prefix}/win_rate"] = model.win_rate
        record[f"{prefix}/weight"] = result.ema.get(model.hotkey, 0.0)
        for name, (raw, normalized) in model.tasks.items():
            record[f"{prefix}/{name}/raw"] = raw if math.isfinite(raw) else None
            record[f"{prefix}/{name}/normalized"] = normalized if math.isfinite(normalized) else None
        for name, rate in model.task_win_rates.items():
            record[f"{prefix}/{name}/win_rate"] = rate
        for key in ("merge_seconds", "peak_memory_bytes", "total_seconds", "train_seconds"):
            if isinstance(model.submission.get(key), float):
                record[f"{prefix}/{key}"] = model.submission[key]
    return record


def round_lines(result: RoundResult) -> list[str]:
    """The round as plain text lines: one per model, every number whole (logs, pm2, files)."""
    head = (f"round {result.competition_name} (id {result.competition_id}) window {result.window_block} "
            f"block {result.block_now} seed {result.seed:x} models {len(result.models)}")
    lines = [head]
    for model in sorted(result.models, key=lambda m: (-result.ema.get(m.hotkey, 0.0), m.score)):
        tasks = " ".join(f"{printable(name, 40)}={_task_cell(raw, norm, model.task_failures.get(name, ''), 4, '')}"
                         + (f"/wr{_fmt(model.task_win_rates[name], 3)}" if name in model.task_win_rates else "")
                         for name, (raw, norm) in sorted(model.tasks.items()))
        if model.submission:
            tasks += f" submission {printable(efficiency_note(model.submission), 120)}"
        note = (f" reason {printable(model.reason, 200)}" if model.reason
                else f" failed_tasks {printable(_failures_note(model), 200)}" if model.task_failures else "")
        lines.append(
            f"  uid {model.uid} repo {printable(model.repo_id, 60)}@{model.revision[:8]} block {model.block} "
            f"score {_fmt(model.score, 6)} {'helm' if _helm(result) else 'win_rate'} {_fmt(model.win_rate, 4)} "
            f"step {_fmt(result.step_weights.get(model.hotkey, 0.0), 4)} "
            f"weight {_fmt(result.ema.get(model.hotkey, 0.0), 6)} {tasks}"
            + note
        )
    if result.dropped_tasks:
        lines.append("  dropped tasks: " + printable(
            ", ".join(f"{k} ({v})" for k, v in result.dropped_tasks.items()), 300))
    return lines


def round_json(result: RoundResult) -> list[str]:
    """The round as JSON lines: one object per model (for log shippers)."""
    out = []
    for model in result.models:
        out.append(json.dumps({
            "event": "round", "competition": result.competition_name, "competition_id": result.competition_id,
            "window_block": result.window_block, "block": result.block_now, "seed": result.seed,
            "uid": model.uid, "hotkey": model.hotkey, "repo": model.repo_id, "revision": model.revision,
            "score": _json_number(model.score), "win_rate": model.win_rate,
            "step": result.step_weights.get(model.hotkey, 0.0), "weight": result.ema.get(model.hotkey, 0.0),
            "tasks": {n: {"raw": _json_number(r), "normalized": _json_number(v),
                          "failure": model.task_failures.get(n, "")} for n, (r, v) in model.tasks.items()},
            "reason": model.reason, "ranking": result.ranking,
            "task_win_rates": dict(model.task_win_rates), "submission": dict(model.submission),
        }, ensure_ascii=True))  # miner text stays escaped in the line
    return out


def _json_number(value: float) -> float | str:
    return value if math.isfinite(value) else ("nan" if math.isnan(value) else "inf")


LOG_FORMATS = ("auto", "table", "text", "json")


def print_round(console: Console, result: RoundResult, log_format: str = "auto") -> bool:
    """Print a round as a table on a terminal, as plain lines off one (or as `log_format` says).

    Off a terminal rich cuts tables to an unreadable width (`6.9…`); lines never truncate.
    """
    style = log_format if log_format != "auto" else ("table" if console.is_terminal else "text")
    if style == "table":
        return show(console, round_table(result))
    lines = round_json(result) if style == "json" else round_lines(result)
    return show(console, Text("\n".join(lines)), soft_wrap=True)  # one record a line, never wrapped


__all__ = [
    "LOG_FORMATS",
    "ValidatorConsole",
    "cell",
    "efficiency_note",
    "make_console",
    "print_round",
    "rejections_table",
    "round_json",
    "round_lines",
    "round_record",
    "round_table",
    "show",
    "weights_table",
]
