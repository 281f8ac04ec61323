"""HELM-style ranking (SPEC §9, "one GPU, one day"): product over tasks of mean win rates.

A model's mean win rate on a task is the fraction of the other models it beats there (lower raw
is better; ties, including two failures, count half). Its ranking score is the product of those
over the tasks (the geometric mean orders models the same way); higher is better. Unlike the
win-rate aggregation there is no advantage for the earlier upload.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from finetune.competition import EvalTaskSpec


def _raw(raw_by_task: Mapping[str, float], task: str) -> float:
    value = raw_by_task.get(task, math.inf)  # a missing result is a failure
    return math.inf if math.isnan(value) else value


def _points(mine: float, theirs: float) -> float:
    """1 for a win (lower raw), 0.5 for a tie (two failures tie too), 0 for a loss."""
    if mine == theirs:
        return 0.5
    return 1.0 if mine < theirs else 0.0


def task_win_rates(raw_by_model: Mapping[int, Mapping[str, float]], task: str) -> dict[int, float]:
    """Each model's mean win rate on one task; a lone model gets 1.0 (no one beats it)."""
    raws = {uid: _raw(r, task) for uid, r in raw_by_model.items()}
    others = len(raws) - 1
    if others <= 0:
        return {uid: 1.0 for uid in raws}
    rates = {}
    for uid, mine in raws.items():
        beaten = sum(_points(mine, theirs) for other, theirs in raws.items() if other != uid)
        rates[uid] = beaten / others
    return rates


def helm_scores(
    raw_by_model: Mapping[int, Mapping[str, float]],
    tasks: Sequence[EvalTaskSpec],
    dropped: Collection[str] = (),
) -> dict[int, float]:
    """Ranking score of every model: the product over remaining tasks of its mean win rates.

    Args:
        raw_by_model: uid -> task name -> raw score (lower is better; missing = failed).
        tasks: the competition's tasks (weights are not used).
        dropped: tasks dropped for everyone this round.

    Returns:
        uid -> score in [0, 1], higher is better. A lone model scores 1.0; if every task was
        dropped, every model scores 0.0 (there is nothing to rank on).
    """
    names = [t.name for t in tasks if t.name not in dropped]
    if not names:
        return {uid: 0.0 for uid in raw_by_model}
    scores = {uid: 1.0 for uid in raw_by_model}
    for name in names:
        for uid, rate in task_win_rates(raw_by_model, name).items():
            scores[uid] *= rate
    return scores


def helm_failed(
    raw_by_model: Mapping[int, Mapping[str, float]],
    tasks: Sequence[EvalTaskSpec],
    dropped: Collection[str] = (),
) -> set[int]:
    """Models with no finite raw score on any remaining task (to pass to `step_weights`)."""
    names = [t.name for t in tasks if t.name not in dropped]
    return {
        uid
        for uid, raws in raw_by_model.items()
        if not any(math.isfinite(_raw(raws, name)) for name in names)
    }


__all__ = ["helm_failed", "helm_scores", "task_win_rates"]
