"""The reference's competition tracker: step weights to smoothed weights to chain weights, in
float32, exactly as taoverse's `CompetitionTracker` computes them (protocol `reference-3.1`).

It differs from ours (`finetune.scoring.weights`) in four ways, each a `WeightRules` choice:

- a competition's first recorded step *is* its smoothed weights (no α damping);
- the step goes to every evaluated model at the best win rate, failed ones included (when
  every model fails, they all tie at win rate 0 and share it);
- every computation is float32, and computing the chain weights renormalises the stored
  smoothed weights of every active competition in place (so they sum to 1 from then on);
- models kept for the next round are ranked by `1 + w` where the smoothed weight `w` is at
  least 0.001, else by win rate, ties in evaluation order.

Weights are plain `uid -> float` dicts, as the reference's tracker keeps one vector entry per
uid (a uid re-registered by a new hotkey inherits the old one's weight until it decays). Values
are float32 widened to Python floats, exactly representable, so a saved state reloads to the
same float32 numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np

K = TypeVar("K")
_F32 = np.float32
KEEP_WEIGHT_FLOOR = 0.001  # below this smoothed weight a model is ranked by its win rate


# torch's float32 `sum` on a CPU adds in vectors of this many floats (measured: 8 on an AVX-512
# x86 machine too; its sum kernel works on 256-bit vectors); the order of additions changes the
# last bit, which decides ties at the threshold (0.18 = 0.9 x 0.2 after a five-way tie). A
# reference validator whose torch sums otherwise would differ from the others there too.
TORCH_SUM_LANES = 8
_ILP = 4  # torch's row_sum keeps four partial sums
_LEVELS = 4  # and cascades them over four levels


def _ceil_log2(x: int) -> int:
    return max(x - 1, 0).bit_length()


def _multi_row_sum(rows: Sequence[Sequence[np.ndarray]], zero: np.ndarray) -> list[np.ndarray]:
    """torch's `multi_row_sum`: `rows[i][k]` summed over i for each k, in its cascade order."""
    size = len(rows)
    level_power = max(4, _ceil_log2(size) // _LEVELS)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = [[zero.copy() for _ in range(_ILP)] for _ in range(_LEVELS)]
    i = 0
    while i + level_step <= size:
        for _ in range(level_step):
            for k in range(_ILP):
                acc[0][k] = acc[0][k] + rows[i][k]
            i += 1
        for j in range(1, _LEVELS):
            for k in range(_ILP):
                acc[j][k] = acc[j][k] + acc[j - 1][k]
                acc[j - 1][k] = zero.copy()
            if i & (level_mask << (j * level_power)):
                break
    for row in rows[i:]:
        for k in range(_ILP):
            acc[0][k] = acc[0][k] + row[k]
    for j in range(1, _LEVELS):
        for k in range(_ILP):
            acc[0][k] = acc[0][k] + acc[j][k]
    return acc[0]


def _row_sum(items: Sequence[np.ndarray], zero: np.ndarray) -> np.ndarray:
    """torch's `row_sum`: four interleaved partial sums, the tail into the first, then folded."""
    size_ilp = len(items) // _ILP
    rows = [items[i * _ILP : (i + 1) * _ILP] for i in range(size_ilp)]
    partial = _multi_row_sum(rows, zero)
    for item in items[size_ilp * _ILP :]:
        partial[0] = partial[0] + item
    for k in range(1, _ILP):
        partial[0] = partial[0] + partial[k]
    return partial[0]


def _f32_sum(weights: Mapping[int, float], size: int) -> np.float32:
    """`torch.sum` of a float32 vector of `size` entries holding `weights` at their uids."""
    vector = np.zeros(max(size, max(weights, default=-1) + 1), dtype=np.float32)
    for uid, value in weights.items():
        vector[uid] = value
    n, lanes = len(vector), TORCH_SUM_LANES
    if n < lanes:  # torch's scalar path: the same cascade over single floats
        return _F32(_row_sum([np.float32(v) for v in vector], np.float32(0.0)))
    vec_size = n // lanes
    chunks = [vector[i * lanes : (i + 1) * lanes] for i in range(vec_size)]
    lanes_sum = _row_sum(chunks, np.zeros(lanes, dtype=np.float32))
    total = _F32(0.0)
    for value in vector[vec_size * lanes :]:
        total = _F32(total + value)
    for value in lanes_sum:
        total = _F32(total + value)
    return total


def _normalised(weights: Mapping[int, float], size: int) -> dict[int, float]:
    """`w / w.sum()` in float32; NaN (an all-zero vector) becomes 0, as `nan_to_num` does."""
    total = _f32_sum(weights, size)
    out: dict[int, float] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for key, value in weights.items():
            share = _F32(_F32(value) / total)
            out[key] = 0.0 if np.isnan(share) else float(share)
    return out


def reference_step_weights(win_rate: Mapping[K, float]) -> dict[K, float]:
    """1 for every evaluated model at the best win rate (failed ones too), 0 for the rest."""
    if not win_rate:
        return {}
    best = max(win_rate.values())
    return {key: (1.0 if rate == best else 0.0) for key, rate in win_rate.items()}


def record_step(
    previous: Mapping[int, float] | None, step: Mapping[int, float], *, alpha: float, size: int
) -> dict[int, float]:
    """The tracker's new smoothed weights of one competition.

    Args:
        previous: the competition's smoothed weights by uid, or None if never recorded.
        step: this round's step weights by uid (0/1 is fine: normalised here).
        alpha: weight of the past.
        size: the metagraph's size (the tracker's vectors have one entry per uid).

    Returns:
        The normalised step itself the first time, else ``α·W + (1 − α)·step`` in float32;
        keys of either input are kept, zeros included (a model not evaluated decays).
    """
    step_n = _normalised(step, size)
    if previous is None:
        return step_n
    # torch multiplies a float32 tensor by a Python float in float32 (the scalar rounded first).
    a, b = _F32(alpha), _F32(1.0 - alpha)
    keys = sorted(set(previous) | set(step_n))
    return {k: float(_F32(_F32(a * _F32(previous.get(k, 0.0))) + _F32(b * _F32(step_n.get(k, 0.0)))))
            for k in keys}


def chain_weights(
    smoothed: Mapping[int, Mapping[int, float]],
    shares: Sequence[tuple[int, float]],
    *,
    threshold: float,
    size: int,
) -> tuple[dict[int, float], dict[int, dict[int, float]]]:
    """Combine the active competitions into the weights set on chain.

    Args:
        smoothed: competition id -> its smoothed weights by uid (never recorded: absent).
        shares: (competition id, reward share) of the competitions in force, in schedule order.
        threshold: entries strictly below it (after normalising) are dropped; with 0 (the
            reference's start-up call) nothing is normalised or dropped.
        size: the metagraph's size.

    Returns:
        (the chain weights by uid, summing to 1 or empty; the smoothed weights the tracker
        stores back: with a threshold, each active competition's renormalised in place).
    """
    subnet: dict[int, float] = {}
    stored: dict[int, dict[int, float]] = {}
    for competition_id, share in shares:
        if competition_id not in smoothed:
            continue  # never recorded: its share goes to the others in the final normalisation
        weights = dict(smoothed[competition_id])
        if threshold > 0:
            weights = _normalised(weights, size)
            stored[competition_id] = weights
            weights = _normalised({k: (w if w >= threshold else 0.0) for k, w in weights.items()}, size)
        for uid, w in weights.items():
            subnet[uid] = float(_F32(_F32(subnet.get(uid, 0.0)) + _F32(_F32(w) * _F32(share))))
    final = _normalised(subnet, size)
    return {k: w for k, w in sorted(final.items()) if w > 0}, stored


def reference_keep(
    win_rate: Mapping[K, float], smoothed: Mapping[K, float], *, k: int
) -> list[K]:
    """The models kept for the next round, best first.

    `win_rate` must be in evaluation order: Python's sort is stable, so ties keep that order.
    """
    def priority(key: K) -> float:
        w = smoothed.get(key, 0.0)
        return 1.0 + w if w >= KEEP_WEIGHT_FLOOR else win_rate[key]

    return sorted(win_rate, key=priority, reverse=True)[:k]


def evaluation_order(keep: Sequence[int], pending: Sequence[int]) -> list[int]:
    """The order the reference evaluates a round's uids in: its set of kept uids, updated
    with the newly pending ones, then listed (CPython's set order, deterministic for ints
    inserted in the same order). It decides ties of the win rate."""
    uids = set(keep)
    uids.update(pending)
    return list(uids)


__all__ = [
    "KEEP_WEIGHT_FLOOR",
    "chain_weights",
    "evaluation_order",
    "record_step",
    "reference_keep",
    "reference_step_weights",
]
