"""`python -m finetune.validator status`: what the validator thinks of every miner, from its state.

`build_status` is a pure function of a `ValidatorState`: per competition the leaderboard, the
models waiting and why, the rejected ones with the reason's explanation and fix
(`finetune.validator.reasons`), a compact score history, and the weights last computed. The
same `StatusView` is printed as rich tables (on a terminal), plain lines (off a terminal or
with ``--plain``), JSON (``--json``), and served by `finetune.validator.status_http`.

Every string that a miner can influence (hotkey, repo, revision, reasons, details) goes
through `finetune.text.printable` when the view is built, so it is one bounded line with its
control characters escaped, and is then shown as `rich.text.Text`, never as markup.
Non-finite numbers (a failed evaluation scores inf) become ``None``: the JSON is strict.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from pydantic import BaseModel, ConfigDict, ValidationError
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

import competitions
from finetune.errors import FinetuneError
from finetune.text import printable
from finetune.validator.reasons import describe
from finetune.validator.state import STATE_VERSION, CompetitionState, TrackedModel, ValidatorState

_HOTKEY, _REPO, _REVISION, _REASON, _DETAIL = 64, 120, 64, 40, 300  # display bounds, characters


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LeaderboardRow(_Record):
    rank: int
    uid: int | None  # None: the hotkey has no tracked model any more
    hotkey: str
    repo_id: str
    revision: str  # of the last evaluation
    score: float | None  # of the last evaluation; None: it failed (inf) or never ran
    win_rate: float
    weight: float  # smoothed weight in this competition
    window_block: int  # sync window of the last evaluation; -1: none kept
    evaluated_at: float | None  # wall time the round of `window_block` finished
    next_round: str  # "kept" (top models), "queued" (re-evaluated), "" (not planned)
    note: str  # why the last evaluation failed or did not count, "" if it did


class PendingRow(_Record):
    uid: int
    hotkey: str
    repo_id: str
    revision: str
    reason: str  # eval_delay | queued | retry | idle
    detail: str
    explanation: str
    blocks_left: int | None  # eval_delay: blocks still to wait when it was last checked
    checked_at: float


class RejectedRow(_Record):
    uid: int
    hotkey: str
    repo_id: str
    revision: str
    reason: str
    detail: str
    explanation: str
    fix: str
    retried: bool  # checked again by itself, without a new commitment
    checked_at: float


class RoundPoint(_Record):
    window_block: int
    finished_at: float
    winner: str
    scores: dict[str, float | None]  # hotkey -> score; None: failed


class CompetitionStatus(_Record):
    competition_id: int
    name: str
    last_window: int
    leaderboard: list[LeaderboardRow]
    pending: list[PendingRow]
    rejected: list[RejectedRow]
    history: list[RoundPoint]  # oldest first


class WeightRow(_Record):
    uid: int | None
    hotkey: str
    weight: float


class StatusView(_Record):
    generated_at: float
    updated_at: float  # when the validator last saved its state
    competitions: list[CompetitionStatus]
    other_rejected: list[RejectedRow]  # rejected before a competition was known (or an inactive one)
    weights: list[WeightRow]  # the weights last computed, highest first


_PENDING_WHY = {
    "eval_delay": "too soon after the commitment; evaluated once the competition's eval delay has passed",
    "queued": "a new revision, checked and on disk: scored in the next round",
    "retry": "scored before; evaluated once more in the next round (the retry rule or a high-stake pick)",
    "idle": "ready, but not planned: evaluated again after a new commitment or a high-stake pick",
}
_BLOCKS_LEFT = re.compile(r"eligible in (\d+) blocks")


def _finite(value: float) -> float | None:
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def _text(value: object, limit: int) -> str:
    return printable(value, limit)


def competition_names() -> dict[int, str]:
    """Competition id -> name, over every known definition."""
    return {c.id: c.name for c in competitions.ALL_COMPETITIONS}


def _leaderboard(comp: CompetitionState, models: Mapping[str, TrackedModel]) -> list[LeaderboardRow]:
    finished = {r.window_block: r.finished_at for r in comp.rounds}
    rows = []
    for hotkey in set(comp.history) | set(comp.ema):
        history = comp.history.get(hotkey) or []
        last = history[-1] if history else None
        model = models.get(hotkey)
        next_round = "kept" if hotkey in comp.keep else "queued" if hotkey in comp.pending else ""
        rows.append(dict(
            uid=model.uid if model else None, hotkey=_text(hotkey, _HOTKEY),
            repo_id=_text(model.repo_id if model else "", _REPO),
            revision=_text(last.revision if last else (model.revision if model else ""), _REVISION),
            score=_finite(last.score) if last else None,
            win_rate=(_finite(last.win_rate) or 0.0) if last else 0.0,
            weight=_finite(comp.ema.get(hotkey, 0.0)) or 0.0,
            window_block=last.window_block if last else -1,
            evaluated_at=finished.get(last.window_block) if last else None,
            next_round=next_round, note=_text(last.reason, 120) if last else "",
        ))

    def order(row: dict) -> tuple:
        score = row["score"]
        return (-row["weight"], score is None, score if score is not None else 0.0,
                row["uid"] if row["uid"] is not None else 1 << 30, row["hotkey"])

    rows.sort(key=order)
    return [LeaderboardRow(rank=i, **row) for i, row in enumerate(rows, start=1)]


def _pending_row(model: TrackedModel, reason: str, detail: str) -> PendingRow:
    match = _BLOCKS_LEFT.search(model.detail) if reason == "eval_delay" else None
    return PendingRow(
        uid=model.uid, hotkey=_text(model.hotkey, _HOTKEY), repo_id=_text(model.repo_id, _REPO),
        revision=_text(model.revision, _REVISION), reason=reason, detail=_text(detail, _DETAIL),
        explanation=_PENDING_WHY[reason], blocks_left=int(match.group(1)) if match else None,
        checked_at=model.checked_at,
    )


def _pending(comp: CompetitionState, models: list[TrackedModel], evaluated: set[str]) -> list[PendingRow]:
    rows = []
    for model in models:
        if model.status == "pending":
            rows.append(_pending_row(model, "eval_delay", model.detail))
        elif model.status != "ready":
            continue
        elif model.hotkey in comp.pending:
            scored = [r for r in comp.history.get(model.hotkey, []) if r.revision == model.revision]
            if scored:
                last = scored[-1]
                score = "inf" if _finite(last.score) is None else repr(last.score)
                rows.append(_pending_row(model, "retry", f"last scored {score} at window {last.window_block}"))
            else:
                rows.append(_pending_row(model, "queued", "not scored yet"))
        elif model.hotkey not in evaluated and model.hotkey not in comp.keep:
            rows.append(_pending_row(model, "idle", "no evaluation kept"))
    return rows


def _rejected_row(model: TrackedModel) -> RejectedRow:
    entry = describe(model.reason)
    return RejectedRow(
        uid=model.uid, hotkey=_text(model.hotkey, _HOTKEY), repo_id=_text(model.repo_id, _REPO),
        revision=_text(model.revision, _REVISION), reason=_text(model.reason, _REASON),
        detail=_text(model.detail, _DETAIL), explanation=entry.explanation, fix=entry.fix,
        retried=entry.retried, checked_at=model.checked_at,
    )


def _history(comp: CompetitionState) -> list[RoundPoint]:
    return [RoundPoint(window_block=r.window_block, finished_at=r.finished_at, winner=_text(r.winner, _HOTKEY),
                       scores={_text(h, _HOTKEY): _finite(s) for h, s in r.scores.items()})
            for r in comp.rounds]


def build_status(state: ValidatorState, *, names: Mapping[int, str] | None = None,
                 now: float | None = None) -> StatusView:
    """The status view of a state. Pure: reads `state`, never changes it.

    Args:
        state: the validator's state (loaded from its file, or the running loop's copy).
        names: competition id -> name (default: every known definition).
        now: the view's `generated_at` (default: the current time).

    Returns:
        A `StatusView` with one section per competition that has state or a model waiting,
        in id order; rejected models of no such competition go to `other_rejected`.
    """
    names = competition_names() if names is None else names
    by_uid = sorted(state.models.values(), key=lambda m: (m.uid, m.hotkey))
    ids = {int(cid) for cid in state.competitions if cid.lstrip("-").isdigit()}
    ids |= {m.competition_id for m in by_uid if m.status != "rejected" and m.competition_id >= 0}
    sections = []
    for cid in sorted(ids):
        comp = state.competitions.get(str(cid)) or CompetitionState()
        mine = [m for m in by_uid if m.competition_id == cid]
        leaderboard = _leaderboard(comp, state.models)
        sections.append(CompetitionStatus(
            competition_id=cid, name=_text(names.get(cid, f"competition {cid}"), 60), last_window=comp.last_window,
            leaderboard=leaderboard, pending=_pending(comp, mine, set(comp.history)),
            rejected=[_rejected_row(m) for m in mine if m.status == "rejected"], history=_history(comp),
        ))
    weights = sorted(state.last_weights.items(), key=lambda kv: (-kv[1], kv[0]))
    return StatusView(
        generated_at=time.time() if now is None else now, updated_at=state.updated_at, competitions=sections,
        other_rejected=[_rejected_row(m) for m in by_uid if m.status == "rejected" and m.competition_id not in ids],
        weights=[WeightRow(uid=state.models[h].uid if h in state.models else None, hotkey=_text(h, _HOTKEY),
                           weight=_finite(w) or 0.0) for h, w in weights],
    )


def read_state(path: Path) -> ValidatorState:
    """Read a state file without touching it (unlike `load_state`, which moves a bad file
    aside and removes a running validator's temporary files).

    Raises:
        FinetuneError: reason `state_unreadable`, naming the file and the problem.
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            found = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            raise ValueError(f"state version {found!r}, expected {STATE_VERSION}")
        return ValidatorState.model_validate(raw)
    except (OSError, UnicodeDecodeError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FinetuneError(f"cannot read the state file {path}: {first}", reason="state_unreadable") from None


# ---- rendering -------------------------------------------------------------------------------


def number(value: float | None, digits: int = 6) -> str:
    """A score or weight as shown: fixed digits, ``inf`` for a failed score, never cut."""
    return "inf" if value is None else f"{value:.{digits}f}"


def when(wall: float | None) -> str:
    """A wall time as UTC, to the second; ``-`` for none."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(wall)) if wall else "-"


def last_round(comp: CompetitionStatus) -> str:
    """``last round window W``, or ``no round yet``."""
    return f"last round window {comp.last_window}" if comp.last_window >= 0 else "no round yet"


def _evaluated(row: LeaderboardRow) -> str:
    return "-" if row.window_block < 0 else f"window {row.window_block} / {when(row.evaluated_at)}"


def status_json(view: StatusView) -> str:
    """The view as strict JSON (no NaN or Infinity), for scripts and `/status.json`."""
    return view.model_dump_json(indent=1)


def _rejected_lines(rows: list[RejectedRow]) -> list[str]:
    return [f"    uid {r.uid} hotkey {r.hotkey} repo {ref(r.repo_id, r.revision)} reason {r.reason} "
            f"retried {'yes' if r.retried else 'no'} checked {when(r.checked_at)}: {r.detail} "
            f"| why: {r.explanation} | fix: {r.fix}" for r in rows]


def render_plain(view: StatusView) -> list[str]:
    """One line per fact: for logs, pipes and grep. Numbers in full, with fixed digits."""
    lines = [f"validator state saved {when(view.updated_at)}, read {when(view.generated_at)}"]
    for comp in view.competitions:
        lines.append(f"competition {comp.name} (id {comp.competition_id}): {last_round(comp)}, "
                     f"{len(comp.history)} rounds kept")
        lines.append(f"  leaderboard ({len(comp.leaderboard)}):")
        lines += [f"    #{r.rank} uid {_uid(r.uid)} hotkey {r.hotkey} repo "
                  f"{ref(r.repo_id, r.revision)} score {number(r.score)} win_rate {number(r.win_rate)} "
                  f"weight {number(r.weight)} last_evaluated {_evaluated(r)} next_round {r.next_round or '-'}"
                  + (f" note {r.note}" if r.note else "") for r in comp.leaderboard]
        lines.append(f"  pending ({len(comp.pending)}):")
        lines += [f"    uid {p.uid} hotkey {p.hotkey} repo {ref(p.repo_id, p.revision)} {p.reason}: {p.detail} "
                  f"| {p.explanation}" for p in comp.pending]
        lines.append(f"  rejected ({len(comp.rejected)}):")
        lines += _rejected_lines(comp.rejected)
    if view.other_rejected:
        lines.append(f"rejected without a competition ({len(view.other_rejected)}):")
        lines += _rejected_lines(view.other_rejected)
    lines.append(f"weights last computed ({len(view.weights)}; state saved {when(view.updated_at)}):")
    lines += [f"  uid {_uid(w.uid)} hotkey {w.hotkey} weight {number(w.weight)}"
              for w in view.weights]
    return lines


Cell = str | Text  # str: our own text (numbers, times); Text: anything from the state


def _table(title: str, headers: tuple[str, ...], rows: list[list[Cell]], whole: set[str]) -> Table:
    """A table whose `whole` columns (numbers, times) are never cut or folded: they keep the
    width of their longest cell, and the text columns fold instead."""
    table = Table(title=Text(title), title_justify="left")
    for i, header in enumerate(headers):
        if header in whole:
            width = max([len(header), *(len(str(row[i])) for row in rows)])
            table.add_column(header, justify="right", no_wrap=True, min_width=width)
        else:
            table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table


def _rejected_table(title: str, rows: list[RejectedRow]) -> Table:
    return _table(title, ("uid", "hotkey", "repo@revision", "reason", "retried", "detail", "what to do"),
                  [[str(r.uid), Text(r.hotkey), Text(ref(r.repo_id, r.revision, 12)), Text(r.reason),
                    "yes" if r.retried else "no", Text(r.detail), Text(r.fix)] for r in rows], {"uid"})


def _uid(uid: int | None) -> str:
    return "-" if uid is None else str(uid)


def ref(repo_id: str, revision: str, short: int | None = None) -> str:
    """``repo@revision`` (the revision cut to `short` characters), ``-`` when neither is known."""
    if not repo_id and not revision:
        return "-"
    return f"{repo_id or '?'}@{revision[:short] if short else revision or '?'}"


def render_tables(view: StatusView) -> list[RenderableType]:
    """Rich tables for a terminal; every miner string is a `Text`, never markup."""
    out: list[RenderableType] = [Text(f"validator state saved {when(view.updated_at)}")]
    for comp in view.competitions:
        out.append(_table(
            f"{comp.name} (id {comp.competition_id}): leaderboard, {last_round(comp)}",
            ("#", "uid", "hotkey", "repo@revision", "score", "win rate", "weight", "window", "evaluated (UTC)",
             "next", "note"),
            [[str(r.rank), _uid(r.uid), Text(r.hotkey), Text(ref(r.repo_id, r.revision, 12)), number(r.score),
              number(r.win_rate), number(r.weight), str(r.window_block) if r.window_block >= 0 else "-",
              when(r.evaluated_at), r.next_round or "-", Text(r.note)] for r in comp.leaderboard],
            {"#", "uid", "score", "win rate", "weight", "window", "evaluated (UTC)"}))
        if comp.pending:
            out.append(_table(f"{comp.name}: waiting", ("uid", "hotkey", "repo@revision", "why", "detail"),
                              [[str(p.uid), Text(p.hotkey), Text(ref(p.repo_id, p.revision, 12)),
                                Text(f"{p.reason}: {p.explanation}"), Text(p.detail)] for p in comp.pending], {"uid"}))
        if comp.rejected:
            out.append(_rejected_table(f"{comp.name}: rejected", comp.rejected))
    if view.other_rejected:
        out.append(_rejected_table("rejected without a competition", view.other_rejected))
    out.append(_table("weights last computed", ("uid", "hotkey", "weight"),
                      [[_uid(w.uid), Text(w.hotkey), number(w.weight)] for w in view.weights], {"uid", "weight"}))
    return out


def print_status(state_path: Path, *, as_json: bool = False, plain: bool | None = None,
                 out: IO[str] | None = None) -> int:
    """`python -m finetune.validator status`. Returns the exit code (2: unreadable state).

    Args:
        state_path: the validator's state file; read, never written.
        as_json: print `status_json` instead of tables.
        plain: plain lines instead of tables (default: when `out` is not a terminal).
        out: where to print (default: stdout).
    """
    out = out or sys.stdout
    try:
        view = build_status(read_state(state_path.expanduser()))
    except FinetuneError as exc:
        sys.stderr.write(f"error: {printable(exc)}\n")
        return 2
    try:
        if as_json:
            out.write(status_json(view) + "\n")
        elif plain or (plain is None and not out.isatty()):
            out.write("\n".join(render_plain(view)) + "\n")
        else:
            console = Console(file=out, markup=False, highlight=False, emoji=False)
            for renderable in render_tables(view):
                console.print(renderable)
        out.flush()
    except BrokenPipeError:  # `status | head`: the reader has what it wanted
        _quiet(out)
    return 0


def _quiet(out: IO[str]) -> None:
    """Point a closed output at /dev/null, so the interpreter's last flush does not fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # no real descriptor (a StringIO): nothing will flush it


__all__ = [
    "CompetitionStatus",
    "LeaderboardRow",
    "PendingRow",
    "RejectedRow",
    "RoundPoint",
    "StatusView",
    "WeightRow",
    "build_status",
    "competition_names",
    "last_round",
    "number",
    "print_status",
    "read_state",
    "ref",
    "render_plain",
    "render_tables",
    "status_json",
    "when",
]
