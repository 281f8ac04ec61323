"""From win rates to chain weights (SPEC §5): step weights, EMA, threshold, reward shares.

Weights are plain `uid -> float` dicts. Functions return new dicts and never mutate inputs.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

from constants import EMA_ALPHA, KEEP_TOP_MODELS, WEIGHT_THRESHOLD


def normalise(weights: Mapping[int, float]) -> dict[int, float]:
    """Scale to sum 1, keeping only positive entries; empty if nothing is positive.

    Raises:
        ValueError: a negative or non-finite weight.
    """
    for uid, w in weights.items():
        if not (math.isfinite(w) and w >= 0):
            raise ValueError(f"weight of uid {uid} must be finite and >= 0, got {w}")
    total = math.fsum(weights.values())
    if total <= 0:
        return {}
    return {uid: w / total for uid, w in weights.items() if w > 0}


def step_weights(win_rate: Mapping[int, float], failed: Collection[int] = ()) -> dict[int, float]:
    """This round's weights: 1 for every uid tied at the best win rate, 0 otherwise, normalised.

    Args:
        win_rate: uid -> win rate (or HELM ranking score: higher is better either way).
        failed: uids whose evaluation failed (score inf); they never get weight.

    Returns:
        uid -> step weight for every uid of `win_rate` (zeros included, so the EMA decays
        them). **Ours:** if every model failed, every entry is 0: nobody gets weight from
        this round (the reference shared it equally).
    """
    step = {uid: 0.0 for uid in win_rate}
    candidates = {uid: r for uid, r in win_rate.items() if uid not in failed}
    if not candidates:
        return step
    best = max(candidates.values())
    leaders = [uid for uid, r in candidates.items() if r == best]
    for uid in leaders:
        step[uid] = 1.0 / len(leaders)
    return step


def ema_update(
    previous: Mapping[int, float],
    step: Mapping[int, float],
    *,
    alpha: float = EMA_ALPHA,
    live_uids: Collection[int] | None = None,
) -> dict[int, float]:
    """Smooth one competition's weights: W ← α·W + (1 − α)·step.

    Args:
        previous: the competition's smoothed weights so far (a new uid starts at 0).
        step: this round's step weights (a uid missing here, e.g. no longer evaluated, gets 0).
        alpha: weight of the past.
        live_uids: when given, uids outside it (deregistered, or re-registered to another
            hotkey) are dropped.

    Returns:
        The new smoothed weights, without exact zeros.
    """
    uids = set(previous) | set(step)
    if live_uids is not None:
        uids &= set(live_uids)
    out: dict[int, float] = {}
    for uid in sorted(uids):
        value = alpha * previous.get(uid, 0.0) + (1.0 - alpha) * step.get(uid, 0.0)
        if value > 0:
            out[uid] = value
    return out


def apply_threshold(
    weights: Mapping[int, float], threshold: float = WEIGHT_THRESHOLD
) -> dict[int, float]:
    """Normalise, zero the entries strictly below `threshold`, and normalise again.

    Returns:
        The surviving uids' weights summing to 1; empty if nothing is positive.
    """
    normalised = normalise(weights)
    return normalise({uid: w for uid, w in normalised.items() if w >= threshold})


def subnet_weights(
    competition_weights: Mapping[int, Mapping[int, float]],
    shares: Mapping[int, float],
    *,
    threshold: float = WEIGHT_THRESHOLD,
) -> dict[int, float]:
    """Combine the active competitions' smoothed weights into the weights set on chain.

    Each active competition's weights go through `apply_threshold`, are scaled by its reward
    share, and are added up; the sum is normalised. A competition not in `shares` (ended) is
    ignored; an active one with no weights leaves its share to the others via the final
    normalisation.

    Args:
        competition_weights: competition id -> uid -> smoothed weight.
        shares: competition id -> reward share of the competitions in force now.
        threshold: per-competition cut-off after normalisation.

    Returns:
        uid -> weight, summing to 1, positive entries only; empty if no uid has weight.
    """
    total: dict[int, float] = {}
    for competition_id, share in shares.items():
        kept = apply_threshold(competition_weights.get(competition_id, {}), threshold)
        for uid, w in kept.items():
            total[uid] = total.get(uid, 0.0) + share * w
    return normalise(total)


def models_to_keep(
    weights: Mapping[int, float],
    win_rate: Mapping[int, float],
    newly_updated: Collection[int] = (),
    *,
    k: int = KEEP_TOP_MODELS,
) -> set[int]:
    """The uids to evaluate next round: the top `k` by (smoothed weight, win rate), plus
    the newly updated ones. Remaining ties go to the lower uid, so every validator agrees.

    Args:
        weights: the competition's smoothed weights (absent = 0).
        win_rate: the last round's win rates (absent = 0).
        newly_updated: uids with a new model since the last round.
        k: how many of the best to keep.
    """
    candidates = set(weights) | set(win_rate)
    ranked = sorted(candidates, key=lambda u: (-weights.get(u, 0.0), -win_rate.get(u, 0.0), u))
    return set(ranked[:k]) | set(newly_updated)


__all__ = [
    "apply_threshold",
    "ema_update",
    "models_to_keep",
    "normalise",
    "step_weights",
    "subnet_weights",
]
