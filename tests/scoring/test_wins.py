import math

import pytest

from finetune.competition import EpsilonSpec
from finetune.scoring import adjusted_score, compute_wins, is_win

INF = math.inf
SPEC = EpsilonSpec(start=0.05, end=0.01, decay_blocks=1000)
NOW = 10_000


def test_lone_model_has_win_rate_zero():
    wins, rate = compute_wins({7: 0.3}, {7: 100}, NOW, SPEC)
    assert wins == {7: 0} and rate == {7: 0.0}


def test_copy_with_same_score_uploaded_later_loses():
    # Original at block 9_500 (age 500: eps = 0.03) vs. a copy at 9_900, same score.
    wins, rate = compute_wins({1: 0.5, 2: 0.5}, {1: 9_500, 2: 9_900}, NOW, SPEC)
    assert wins == {1: 1, 2: 0} and rate == {1: 1.0, 2: 0.0}


def test_later_model_must_beat_the_epsilon_advantage():
    # Earlier model: 0.5 * (1 - 0.03) = 0.485 adjusted.
    assert adjusted_score(0.5, 9_500, 9_900, NOW, SPEC) == pytest.approx(0.485)
    assert not is_win(0.486, 0.5, 9_900, 9_500, NOW, SPEC)
    assert is_win(0.484, 0.5, 9_900, 9_500, NOW, SPEC)


def test_same_block_no_advantage_and_exact_tie_nobody_wins():
    wins, _ = compute_wins({1: 0.5, 2: 0.5}, {1: 9_000, 2: 9_000}, NOW, SPEC)
    assert wins == {1: 0, 2: 0}
    wins, _ = compute_wins({1: 0.49, 2: 0.5}, {1: 9_000, 2: 9_000}, NOW, SPEC)
    assert wins == {1: 1, 2: 0}


def test_inf_never_wins_and_loses_to_finite():
    wins, rate = compute_wins({1: INF, 2: 0.9, 3: INF}, {1: 1, 2: 9_999, 3: 2}, NOW, SPEC)
    assert wins == {1: 0, 2: 2, 3: 0}
    assert rate[2] == 1.0


def test_nan_is_treated_as_failure():
    wins, _ = compute_wins({1: math.nan, 2: 0.9}, {1: 1, 2: 9_999}, NOW, SPEC)
    assert wins == {1: 0, 2: 1}


def test_three_models_hand_computed():
    # eps of the model at 9_000 is 0.01 (fully decayed), at 9_800 it is 0.042.
    scores = {10: 0.50, 11: 0.45, 12: 0.44}
    blocks = {10: 9_000, 11: 9_800, 12: 9_900}
    wins, rate = compute_wins(scores, blocks, NOW, SPEC)
    # 10 vs 11: 0.495 vs 0.45 -> 11 wins. 10 vs 12: 0.495 vs 0.44 -> 12 wins.
    # 11 vs 12: 0.45 * 0.958 = 0.4311 vs 0.44 -> 11 wins.
    assert wins == {10: 0, 11: 2, 12: 1}
    assert rate == {10: 0.0, 11: 1.0, 12: 0.5}


def test_negative_score_rejected():
    with pytest.raises(ValueError, match=">= 0"):
        compute_wins({1: -0.1, 2: 0.2}, {1: 1, 2: 2}, NOW, SPEC)
