import pytest

from finetune.scoring import (
    apply_threshold,
    ema_update,
    models_to_keep,
    normalise,
    step_weights,
    subnet_weights,
)


def test_step_weights_single_leader_and_ties():
    assert step_weights({1: 1.0, 2: 0.5, 3: 0.0}) == {1: 1.0, 2: 0.0, 3: 0.0}
    assert step_weights({1: 0.5, 2: 0.5, 3: 0.0}) == {1: 0.5, 2: 0.5, 3: 0.0}


def test_lone_model_gets_the_step_weight():
    assert step_weights({4: 0.0}) == {4: 1.0}


def test_all_failed_nobody_gets_weight():
    assert step_weights({1: 0.0, 2: 0.0}, failed={1, 2}) == {1: 0.0, 2: 0.0}
    assert step_weights({}) == {}


def test_failed_uid_never_leads():
    assert step_weights({1: 0.0, 2: 0.0}, failed={1}) == {1: 0.0, 2: 1.0}


def test_ema_new_uid_gone_uid_and_missing_step():
    prev = {1: 1.0, 2: 0.5}
    out = ema_update(prev, {1: 0.0, 3: 1.0}, live_uids={1, 3})
    assert out == pytest.approx({1: 0.9, 3: 0.1})  # 2 deregistered: dropped
    out = ema_update(prev, {3: 1.0})  # 1 and 2 not evaluated: they decay
    assert out == pytest.approx({1: 0.9, 2: 0.45, 3: 0.1})
    assert ema_update({}, {1: 0.0}) == {}  # exact zeros are not kept


def test_threshold_strictly_below_is_zeroed():
    assert apply_threshold({1: 0.82, 2: 0.18}) == pytest.approx({1: 0.82, 2: 0.18})
    assert apply_threshold({1: 0.83, 2: 0.17}) == pytest.approx({1: 1.0})
    # Many tied uids, each under the threshold: the competition gives nothing.
    assert apply_threshold({u: 1.0 for u in range(6)}) == {}


def _run_rounds(weights, winner, rounds):
    for _ in range(rounds):
        weights = ema_update(weights, step_weights({**dict.fromkeys(weights, 0.0), winner: 1.0}))
    return weights


def test_new_winner_needs_two_consecutive_wins():
    w = {1: 1.0}  # steady incumbent
    w = _run_rounds(w, winner=2, rounds=1)
    assert subnet_weights({9: w}, {9: 1.0}) == pytest.approx({1: 1.0})
    w = _run_rounds(w, winner=2, rounds=1)
    chain = subnet_weights({9: w}, {9: 1.0})
    assert chain == pytest.approx({1: 0.81, 2: 0.19})


def test_ousted_winner_fades_after_17_rounds():
    w = _run_rounds({1: 1.0}, winner=2, rounds=16)
    assert 1 in subnet_weights({9: w}, {9: 1.0})  # 0.9**16 = 0.185 >= 0.18
    w = _run_rounds(w, winner=2, rounds=1)
    assert subnet_weights({9: w}, {9: 1.0}) == pytest.approx({2: 1.0})  # 0.9**17 = 0.167


def test_shares_scale_competitions():
    weights = {2: {1: 1.0}, 3: {5: 0.5, 6: 0.5}}
    out = subnet_weights(weights, {2: 0.75, 3: 0.25})
    assert out == pytest.approx({1: 0.75, 5: 0.125, 6: 0.125})


def test_competition_ending_is_dropped_and_the_rest_renormalised():
    weights = {2: {1: 1.0}, 3: {5: 1.0}}
    assert subnet_weights(weights, {3: 1.0}) == pytest.approx({5: 1.0})


def test_active_competition_without_weights_leaves_its_share():
    assert subnet_weights({2: {1: 1.0}}, {2: 0.75, 3: 0.25}) == pytest.approx({1: 1.0})
    assert subnet_weights({}, {2: 1.0}) == {}


def test_same_uid_in_two_competitions_adds_up():
    out = subnet_weights({2: {1: 1.0}, 3: {1: 0.5, 4: 0.5}}, {2: 0.5, 3: 0.5})
    assert out == pytest.approx({1: 0.75, 4: 0.25})


def test_normalise_rejects_bad_weights():
    with pytest.raises(ValueError):
        normalise({1: -0.1})
    assert normalise({1: 0.0}) == {}


def test_keep_set():
    weights = {1: 0.5, 2: 0.3, 3: 0.1, 4: 0.1}
    rates = {3: 0.2, 4: 0.9, 5: 1.0}
    # 3 and 4 tie on weight: 4 has the better win rate; 5 has no weight.
    assert models_to_keep(weights, rates) == {1, 2, 4}
    assert models_to_keep(weights, rates, newly_updated={9}) == {1, 2, 4, 9}
    # Full ties go to the lower uid.
    assert models_to_keep({}, {8: 0.0, 3: 0.0, 5: 0.0, 1: 0.0}, k=2) == {1, 3}
