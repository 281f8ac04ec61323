"""Eval history per hotkey per competition, and the retry rule for a model that lost (SPEC §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from constants import EVAL_HISTORY_LENGTH, FAILED_EVAL_RETRIES
from finetune.competition import EpsilonSpec
from finetune.scoring.epsilon import epsilon


class EvalRecord(BaseModel):
    """One evaluation of one model. `score` is inf when the evaluation failed."""

    # JSON keeps inf as `Infinity` (the default would write null and lose the failure).
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_inf_nan="constants")

    block: int = Field(ge=0)  # block of the round that produced it
    score: float  # aggregate score, lower is better
    fingerprint: str = ""  # the competition's task names and versions at the time
    # The round's winner when this record was made (the reference's retry rule reads them).
    winner_block: float = 0  # float: the reference keeps inf for a winner with no model
    winner_score: float = math.inf


def append_record(
    history: Sequence[EvalRecord], record: EvalRecord, *, keep: int = EVAL_HISTORY_LENGTH
) -> tuple[EvalRecord, ...]:
    """The history with `record` appended (oldest first), cut to the last `keep` records."""
    return (*history, record)[-keep:]


def should_retry(
    history: Sequence[EvalRecord],
    *,
    model_block: int,
    winner_score: float,
    winner_block: int,
    block_now: int,
    epsilon_spec: EpsilonSpec,
    fingerprint: str | None = None,
    failed_retries: int = FAILED_EVAL_RETRIES,
) -> bool:
    """Whether to evaluate a model again that is not among the models kept for the round.

    Rules, in order:
    1. never evaluated -> yes;
    2. `fingerprint` given and different from the last record's (tasks changed) -> yes;
    3. every evaluation failed -> yes while it has failed at most `failed_retries` times
       (one retry by default);
    4. its last finite score did not beat the winner's raw score -> no;
    5. it did, and the winner is the earlier upload -> yes iff it now beats the winner's
       score reduced by the winner's current ε (which has decayed since it lost);
    6. it did, and the winner is not earlier (no advantage) -> yes.

    Args:
        history: the model's eval records, oldest first.
        model_block: the block of the model's commitment.
        winner_score: the current winner's last aggregate score.
        winner_block: the block of the winner's commitment.
        block_now: the current block.
        epsilon_spec: the competition's epsilon.
        fingerprint: the competition's current task fingerprint, if tracked.
        failed_retries: how many failed evaluations still earn another try.
    """
    if not history:
        return True
    if fingerprint is not None and history[-1].fingerprint != fingerprint:
        return True
    finite = [r.score for r in history if math.isfinite(r.score)]
    if not finite:
        return len(history) <= failed_retries
    last = finite[-1]
    if not math.isfinite(winner_score):
        return True
    if last >= winner_score:
        return False
    if winner_block < model_block:
        return last < winner_score * (1.0 - epsilon(epsilon_spec, block_now, winner_block))
    return True


def should_retry_reference(
    history: Sequence[EvalRecord], *, block_now: int, epsilon_spec: EpsilonSpec
) -> bool:
    """The reference's retry rule (protocol `reference-3.1`), on the model's own records.

    1. never evaluated -> yes;
    2. take its last record whose score is not inf (NaN counts as a result): it lost to the
       winner of that round by raw score -> no; else yes iff its score is below that winner's
       score reduced by the winner's ε now (whichever model was earlier);
    3. no such record -> yes iff it has fewer than two records (one retry after a failure).
    """
    if not history:
        return True
    for record in reversed(history):
        if record.score != math.inf:
            if record.score > record.winner_score:
                return False
            eps = epsilon(epsilon_spec, block_now, record.winner_block)
            return record.score < record.winner_score * (1 - eps)
    return len(history) < 2


__all__ = ["EvalRecord", "append_record", "should_retry", "should_retry_reference"]
