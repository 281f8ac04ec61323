"""A model's score over a competition's tasks (SPEC §5): Σ weight × normalise(raw).

Raw scores are "lower is better" everywhere, and so is the aggregate.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

from finetune.competition import EvalTaskSpec


def effective_weights(
    tasks: Sequence[EvalTaskSpec], dropped: Collection[str] = ()
) -> dict[str, float]:
    """Task weights rescaled to sum to 1 over the tasks not dropped this round.

    Args:
        tasks: the competition's tasks.
        dropped: names of tasks whose data could not be loaded this round (for everyone).

    Returns:
        name -> weight for each remaining task; empty if every task was dropped.
    """
    kept = [t for t in tasks if t.name not in dropped]
    total = math.fsum(t.weight for t in kept)
    return {t.name: t.weight / total for t in kept} if total > 0 else {}


def normalised_scores(
    raw_by_task: Mapping[str, float], tasks: Sequence[EvalTaskSpec], dropped: Collection[str] = ()
) -> dict[str, float]:
    """Each remaining task's normalised score (the per-task breakdown of the aggregate).

    A raw inf (e.g. FINEWEB's degeneracy gate) is the worst possible result: a capped
    normalisation maps it to its maximum, 1, as SPEC §4 says for raw >= ceiling; an
    uncapped one keeps inf. A missing result (the task crashed), NaN or -inf is a
    failure and gives inf.
    """
    out: dict[str, float] = {}
    for task in tasks:
        if task.name in dropped:
            continue
        raw = raw_by_task.get(task.name, math.nan)
        out[task.name] = task.normalization.apply(raw) if raw == raw and raw != -math.inf else math.inf
    return out


def aggregate_score(
    raw_by_task: Mapping[str, float],
    tasks: Sequence[EvalTaskSpec],
    dropped: Collection[str] = (),
) -> float:
    """Weighted sum of normalised task scores, weights rescaled over the tasks not dropped.

    Args:
        raw_by_task: task name -> raw score of one model. A task that is missing here (its
            evaluation crashed) counts as failed. Entries for dropped tasks are ignored.
        tasks: the competition's tasks.
        dropped: names of tasks dropped for everyone this round.

    Returns:
        The score (lower is better); inf if any remaining task failed (missing, inf or NaN),
        or if every task was dropped (nothing to compare, so nobody can win).
    """
    weights = effective_weights(tasks, dropped)
    if not weights:
        return math.inf
    normalised = normalised_scores(raw_by_task, tasks, dropped)
    if not all(math.isfinite(v) for v in normalised.values()):
        return math.inf
    return math.fsum(weights[name] * value for name, value in normalised.items())


def reference_score(
    raw_by_task: Mapping[str, float],
    tasks: Sequence[EvalTaskSpec],
    dropped: Collection[str] = (),
) -> float:
    """The score as the reference computes it (protocol `reference-3.1`).

    A plain running sum in task order, each weight divided by the remaining weights' sum only
    when that sum is not close to 1. Unlike `aggregate_score`, a NaN raw score is not a
    failure: it makes the score NaN, which beats no model and is beaten by none (see
    `finetune.scoring.wins`); a missing result (the model's scoring raised) is inf, and an
    inf raw score is 1 on a capped normalisation, inf otherwise.

    Returns:
        The score, NaN and inf included; inf when every task was dropped.
    """
    kept = [t for t in tasks if t.name not in dropped]
    if not kept:
        return math.inf
    total = sum(t.weight for t in kept)
    rescale = not math.isclose(total, 1.0) and total > 0
    score = 0
    for task in kept:
        raw = raw_by_task.get(task.name, math.inf)
        score += _reference_normalise(task, raw) * (task.weight / total if rescale else task.weight)
    return float(score)


def _reference_normalise(task: EvalTaskSpec, raw: float) -> float:
    norm = task.normalization
    if norm.ceiling is None or norm.kind.value == "none":
        return raw
    if raw >= norm.ceiling:
        return 1.0
    return (1 - math.exp(-raw / norm.ceiling)) / (1 - math.exp(-1))  # NaN stays NaN


__all__ = ["aggregate_score", "effective_weights", "normalised_scores", "reference_score"]
