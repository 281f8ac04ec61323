"""Properties that must hold for any input (hypothesis)."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from finetune.competition import EpsilonSpec
from finetune.scoring import compute_wins, ema_update, step_weights, subnet_weights

SPEC = EpsilonSpec(start=0.05, end=0.01, decay_blocks=500)
uids = st.integers(min_value=0, max_value=255)
weight_maps = st.dictionaries(uids, st.floats(min_value=0, max_value=10), max_size=12)
score = st.one_of(st.floats(min_value=0, max_value=5), st.just(math.inf))


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(1, 4), weight_maps, max_size=4), st.data())
def test_subnet_weights_sum_to_one_and_are_nonnegative(per_competition, data):
    ids = sorted(per_competition)
    if ids:
        raw = data.draw(st.lists(st.floats(0.01, 1), min_size=len(ids), max_size=len(ids)))
        shares = {i: r / sum(raw) for i, r in zip(ids, raw, strict=True)}
    else:
        shares = {}
    out = subnet_weights(per_competition, shares)
    assert all(w > 0 for w in out.values())
    assert not out or math.isclose(sum(out.values()), 1.0)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(uids, st.tuples(score, st.integers(0, 2000)), max_size=10))
def test_wins_are_antisymmetric_and_rates_bounded(models):
    scores = {u: s for u, (s, _) in models.items()}
    blocks = {u: b for u, (_, b) in models.items()}
    wins, rate = compute_wins(scores, blocks, 2000, SPEC)
    n = len(models)
    assert sum(wins.values()) <= n * (n - 1) // 2  # at most one winner per pair
    assert all(0.0 <= r <= 1.0 for r in rate.values())
    assert all(wins[u] == 0 for u, s in scores.items() if math.isinf(s))
    step = step_weights(rate, failed={u for u, s in scores.items() if math.isinf(s)})
    finite = any(math.isfinite(s) for s in scores.values())
    assert math.isclose(sum(step.values()), 1.0) if finite else not any(step.values())


@settings(max_examples=40, deadline=None)
@given(weight_maps, weight_maps)
def test_ema_of_distributions_stays_a_distribution(prev, step):
    def dist(m):
        total = sum(m.values())
        return {u: w / total for u, w in m.items()} if total > 0 else {}

    p, s = dist(prev), dist(step)
    if p and s:
        out = ema_update(p, s)
        assert math.isclose(sum(out.values()), 1.0)
        assert all(w > 0 for w in out.values())
