"""Pairwise wins with an advantage for the earlier upload (SPEC §5).

Scores are aggregate scores: lower is better, never negative, inf for a failed model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TypeVar

from finetune.competition import EpsilonSpec
from finetune.scoring.epsilon import epsilon

K = TypeVar("K")


def _clean(score: float, nan_ties: bool = False) -> float:
    if math.isnan(score):
        # Ours: a NaN score is a failure. The reference's: NaN compares false both ways, so
        # it beats no model and is beaten by none.
        return score if nan_ties else math.inf
    if score < 0:
        raise ValueError(f"scores must be >= 0 (lower is better), got {score}")
    return score


def adjusted_score(
    score: float, block: int, other_block: int, block_now: int, spec: EpsilonSpec
) -> float:
    """`score` as compared against a model uploaded at `other_block`.

    Only the strictly earlier upload is adjusted: its score is multiplied by 1 − ε(now, block).
    Same block: no advantage either way.
    """
    if block < other_block:
        return score * (1.0 - epsilon(spec, block_now, block))
    return score


def is_win(
    score_i: float,
    score_j: float,
    block_i: int,
    block_j: int,
    block_now: int,
    spec: EpsilonSpec,
    *,
    nan_ties: bool = False,
) -> bool:
    """True iff model i beats model j: its adjusted score is strictly lower.

    Consequences: exact ties go to nobody (so a copy with the same score, uploaded later, loses
    to the original as soon as ε > 0, and equal blocks with equal scores tie); an inf score
    never wins and loses to every finite one.

    Raises:
        ValueError: a negative score (ε would then penalise the earlier model).
    """
    a = adjusted_score(_clean(score_i, nan_ties), block_i, block_j, block_now, spec)
    b = adjusted_score(_clean(score_j, nan_ties), block_j, block_i, block_now, spec)
    return a < b


def compute_wins(
    scores: Mapping[int, float],
    blocks: Mapping[int, int],
    block_now: int,
    epsilon_spec: EpsilonSpec,
    *,
    nan_ties: bool = False,
) -> tuple[dict[int, int], dict[int, float]]:
    """Wins and win rates of every model of one competition round.

    Args:
        scores: uid -> aggregate score (lower is better; inf = failed).
        blocks: uid -> block of the model's commitment; must cover every uid of `scores`.
        block_now: the block of the round (ε is computed at it).
        epsilon_spec: the competition's epsilon.
        nan_ties: the reference's NaN (beats none, beaten by none) instead of a failure.

    Returns:
        (wins, win_rate): uid -> number of other models beaten, and uid -> wins / (n − 1).
        A lone model has win rate 0.

    Raises:
        KeyError: a uid of `scores` has no block.
        ValueError: a negative score.
    """
    uids = list(scores)
    wins = {uid: 0 for uid in uids}
    for i in uids:
        for j in uids:
            if i != j and is_win(
                scores[i], scores[j], blocks[i], blocks[j], block_now, epsilon_spec,
                nan_ties=nan_ties,
            ):
                wins[i] += 1
    others = len(uids) - 1
    win_rate = {uid: (wins[uid] / others if others > 0 else 0.0) for uid in uids}
    return wins, win_rate


def competitive_models(
    scores: Mapping[K, float], blocks: Mapping[K, int], epsilon_spec: EpsilonSpec
) -> set[K]:
    """The models that could ever win: each beats every strictly earlier model even once the
    earlier one's advantage has fully decayed (to ε's end value). Ours, protocol `next`.

    Fresh clones of a leader carry a larger ε than the old leader, so they beat a better
    newcomer that beats the leader, and shield it. A clone cannot beat the model it copies at
    any ε, so it is left out before win rates are computed, and with it every model that is
    no improvement on an earlier one.

    Returns:
        The competitive keys (the earliest model always is, if its score is finite).
    """
    factor = 1.0 - epsilon_spec.end
    kept: set[K] = set()
    best_before = math.inf  # best score among models of strictly earlier blocks
    by_block: dict[int, list[K]] = {}
    for key in scores:
        by_block.setdefault(blocks[key], []).append(key)
    for block in sorted(by_block):
        group = by_block[block]
        for key in group:
            score = _clean(scores[key])
            if math.isfinite(score) and score < best_before * factor:
                kept.add(key)
        best_before = min([best_before, *(_clean(scores[k]) for k in group)])
    return kept


__all__ = ["adjusted_score", "competitive_models", "compute_wins", "is_win"]
