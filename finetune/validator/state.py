"""The validator's persistent state: versioned JSON, written atomically, tolerant of damage.

Everything is keyed by hotkey, not uid: uids are recycled when a miner deregisters, and a new
owner of a uid must not inherit the previous owner's history or weight.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

STATE_VERSION = 1
ROUNDS_KEPT = 200  # round summaries per competition: months of history at a few KiB each


class TrackedModel(BaseModel):
    """The model a hotkey has committed, as far as the validator has checked it."""

    model_config = ConfigDict(extra="ignore")

    hotkey: str
    uid: int
    commitment: str  # the raw commitment text, to notice changes
    repo_id: str = ""
    revision: str = ""
    competition_id: int = -1
    block: int = 0  # submission block
    content_hash: str = ""
    local_path: str = ""
    status: str = "pending"  # pending | ready | rejected
    reason: str = ""  # rejection code when status == rejected
    detail: str = ""
    checked_at: float = 0.0  # wall time of the last check
    # A newer commitment of this hotkey still in its eval delay; until it is checked, this
    # (older, ready) model keeps competing.
    waiting_commitment: str = ""
    waiting_detail: str = ""
    # The seeds' competitions: what its checked `submission.json` declared (a merge's time
    # and peak memory, a recipe's base); escaped and bounded by `finetune.submission`.
    submission: dict[str, str | float] = Field(default_factory=dict)


class EvalRecord(BaseModel):
    """One evaluation of a model in one round."""

    # A failed evaluation scores inf; keep it as `Infinity` in JSON rather than null.
    model_config = ConfigDict(ser_json_inf_nan="constants")

    window_block: int
    revision: str
    score: float  # inf when the evaluation failed
    win_rate: float = 0.0
    tasks: dict[str, float] = Field(default_factory=dict)  # task -> raw
    # task -> why it gave no score (raw inf), "code: detail" ("degenerate: 12 of 20 gate positions agree")
    task_failures: dict[str, str] = Field(default_factory=dict)
    fingerprint: str = ""  # task names and versions, so a change of tasks earns a re-evaluation
    reason: str = ""
    # The round's winner then (the reference's retry rule compares with it). A float: the
    # reference's block of a winner without a model is inf.
    winner_block: float = 0
    winner_score: float = float("inf")

    @property
    def failed(self) -> bool:
        return self.score == float("inf")


def _finite_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weights must be finite: a non-finite entry (from a bug or a hand-edited file) is
    dropped with a warning instead of making the whole state unusable."""
    bad = sorted(h for h, w in weights.items() if not math.isfinite(w))
    if bad:
        logger.warning("dropping non-finite weights of %s from the state", ", ".join(h[:8] for h in bad))
    return {h: w for h, w in weights.items() if math.isfinite(w)}


class RoundSummary(BaseModel):
    """One finished round of a competition, kept for the status views (a score history)."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    window_block: int
    block: int
    seed: int
    finished_at: float  # wall time
    winner: str = ""  # hotkey of the round's winner
    scores: dict[str, float] = Field(default_factory=dict)  # hotkey -> score (inf: failed)
    weights: dict[str, float] = Field(default_factory=dict)  # hotkey -> smoothed weight after it


class CompetitionState(BaseModel):
    """Per competition: smoothed weights, the models kept for the next round, history."""

    model_config = ConfigDict(ser_json_inf_nan="constants")

    ema: dict[str, float] = Field(default_factory=dict)  # hotkey -> smoothed weight
    keep: list[str] = Field(default_factory=list)  # hotkeys carried to the next round
    pending: list[str] = Field(default_factory=list)  # hotkeys updated since the last round
    history: dict[str, list[EvalRecord]] = Field(default_factory=dict)  # hotkey -> last N
    last_window: int = -1  # sync window of the last completed round
    retried: list[str] = Field(default_factory=list)  # hotkey:revision given their one retry
    rounds: list[RoundSummary] = Field(default_factory=list)  # the last ROUNDS_KEPT, oldest first

    _ema_finite = field_validator("ema")(_finite_weights)


class ValidatorState(BaseModel):
    # NaN and inf are written as the JSON constants Python reads back, never as null.
    model_config = ConfigDict(ser_json_inf_nan="constants", validate_assignment=False)

    version: int = STATE_VERSION
    models: dict[str, TrackedModel] = Field(default_factory=dict)
    competitions: dict[str, CompetitionState] = Field(default_factory=dict)
    last_weights: dict[str, float] = Field(default_factory=dict)  # hotkey -> weight last computed
    updated_at: float = 0.0

    _weights_finite = field_validator("last_weights")(_finite_weights)

    def competition(self, competition_id: int) -> CompetitionState:
        return self.competitions.setdefault(str(competition_id), CompetitionState())

    def record_eval(self, competition_id: int, hotkey: str, record: EvalRecord, keep_last: int) -> None:
        history = self.competition(competition_id).history.setdefault(hotkey, [])
        history.append(record)
        del history[:-keep_last]

    def realign(self, registered_hotkeys: Iterable[str], successors: Mapping[str, str] | None = None) -> list[str]:
        """Forget every hotkey no longer registered. Returns the hotkeys dropped.

        Args:
            registered_hotkeys: the hotkeys of the current metagraph.
            successors: deregistered hotkey -> the hotkey now holding its uid, whose smoothed
                and last weights it passes on (the reference's tracker keeps weights by uid).
        """
        registered = set(registered_hotkeys)
        for old, new in (successors or {}).items():
            if old in registered or new not in registered:
                continue
            for comp in self.competitions.values():
                if old in comp.ema:
                    comp.ema[new] = comp.ema.pop(old)
            if old in self.last_weights:
                self.last_weights[new] = self.last_weights.pop(old)
        dropped = sorted(h for h in self.models if h not in registered)
        for hotkey in dropped:
            del self.models[hotkey]
        for comp in self.competitions.values():
            for mapping in (comp.ema, comp.history):
                for hotkey in [h for h in mapping if h not in registered]:
                    del mapping[hotkey]
                    if hotkey not in dropped:
                        dropped.append(hotkey)
            comp.keep = [h for h in comp.keep if h in registered]
            comp.pending = [h for h in comp.pending if h in registered]
        for hotkey in [h for h in self.last_weights if h not in registered]:
            del self.last_weights[hotkey]
        return dropped


def save_state(state: ValidatorState, path: Path) -> None:
    """Write atomically: a temporary file in the same folder, fsync, then rename over."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state.updated_at = time.time()
    payload = state.model_dump_json(indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sweep_temporary_files(path: Path) -> None:
    """Remove what an interrupted `save_state` left: `.<name>.*.tmp` beside the state file.

    Only one validator writes a state file, and it is not writing while it starts.
    """
    try:
        leftovers = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        try:
            leftover.unlink()
            logger.info("removed %s, left by an interrupted save", leftover)
        except OSError as exc:
            logger.warning("could not remove %s: %s", leftover, exc)


def load_state(path: Path) -> ValidatorState:
    """Load the state, or start fresh if there is none or it cannot be used.

    A corrupt file, or one from another state version, is moved aside (never deleted) with a
    warning naming where it went, so an operator can inspect it.
    """
    _sweep_temporary_files(path)
    if not path.exists():
        return ValidatorState()
    problem = ""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            found = raw.get("version") if isinstance(raw, dict) else type(raw).__name__
            problem = f"state version {found!r}, expected {STATE_VERSION}"
        else:
            return ValidatorState.model_validate(raw)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as exc:
        problem = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    aside = path.with_name(f"{path.name}.bad-{int(time.time())}")
    os.replace(path, aside)
    logger.warning("state file %s unusable (%s); moved to %s, starting fresh", path, problem, aside)
    return ValidatorState()
