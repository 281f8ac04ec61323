"""Console tables and metric records for a round. Presentation only: no decisions here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from finetune.validator.round import RoundResult
    from finetune.validator.state import TrackedModel


def _fmt(value: float, digits: int = 4) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def round_table(result: RoundResult) -> Table:
    """uid, repo, score, epsilon advantage, win rate, weights and per-task raw/normalised."""
    task_names = sorted({name for m in result.models for name in m.tasks})
    table = Table(title=f"{result.competition_name} (id {result.competition_id}) "
                        f"window {result.window_block} seed {result.seed:x}"[:120])
    for header in ("uid", "repo", "block", "score", "eps adv", "win rate", "step", "weight"):
        table.add_column(header, justify="left" if header == "repo" else "right")
    for name in task_names:
        table.add_column(f"{name} raw/norm", justify="right")
    table.add_column("note")
    for model in sorted(result.models, key=lambda m: (-result.ema.get(m.hotkey, 0.0), m.score)):
        cells = [
            str(model.uid),
            f"{model.repo_id}@{model.revision[:7]}",
            str(model.block),
            _fmt(model.score),
            _fmt(model.epsilon_advantage, 3),
            _fmt(model.win_rate, 3),
            _fmt(result.step_weights.get(model.hotkey, 0.0), 3),
            _fmt(result.ema.get(model.hotkey, 0.0), 3),
        ]
        for name in task_names:
            raw, normalized = model.tasks.get(name, (math.nan, math.nan))
            cells.append(f"{_fmt(raw, 3)}/{_fmt(normalized, 3)}")
        cells.append(model.reason)
        table.add_row(*cells)
    if result.dropped_tasks:
        table.caption = "dropped tasks: " + ", ".join(f"{k} ({v})" for k, v in result.dropped_tasks.items())
    return table


def weights_table(weights_by_uid: Mapping[int, float], hotkeys: Mapping[int, str]) -> Table:
    table = Table(title="weights to set")
    table.add_column("uid", justify="right")
    table.add_column("hotkey")
    table.add_column("weight", justify="right")
    for uid, weight in sorted(weights_by_uid.items(), key=lambda kv: -kv[1]):
        table.add_row(str(uid), hotkeys.get(uid, "?")[:12], f"{weight:.4f}")
    return table


def rejections_table(models: Mapping[str, TrackedModel]) -> Table:
    table = Table(title="rejected models")
    for header in ("uid", "hotkey", "repo", "reason", "detail"):
        table.add_column(header)
    for model in sorted(models.values(), key=lambda m: m.uid):
        if model.status == "rejected":
            table.add_row(str(model.uid), model.hotkey[:12], model.repo_id, model.reason, model.detail[:80])
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
    return record


def print_round(console: Console, result: RoundResult) -> None:
    console.print(round_table(result))
