import math

import pytest

from finetune.competition import EvalTaskSpec, Method
from finetune.scoring import helm_failed, helm_scores, step_weights, task_win_rates

INF = math.inf
TASKS = tuple(
    EvalTaskSpec(name=n, method=Method.MULTIPLE_CHOICE, dataset="d", weight=0.5, samples=1)
    for n in ("A", "B")
)


def test_per_task_mean_win_rate_with_half_ties():
    raws = {1: {"A": 0.1}, 2: {"A": 0.2}, 3: {"A": 0.2}}
    assert task_win_rates(raws, "A") == {1: 1.0, 2: 0.25, 3: 0.25}


def test_product_over_tasks():
    raws = {1: {"A": 0.1, "B": 0.9}, 2: {"A": 0.2, "B": 0.5}, 3: {"A": 0.3, "B": 0.1}}
    # A: 1 -> 1, 2 -> 0.5, 3 -> 0.   B: 1 -> 0, 2 -> 0.5, 3 -> 1.
    assert helm_scores(raws, TASKS) == pytest.approx({1: 0.0, 2: 0.25, 3: 0.0})
    # With B dropped only A counts.
    assert helm_scores(raws, TASKS, dropped={"B"}) == pytest.approx({1: 1.0, 2: 0.5, 3: 0.0})


def test_lone_model_scores_one():
    assert helm_scores({7: {"A": 3.0, "B": 2.0}}, TASKS) == {7: 1.0}


def test_failures_rank_last_and_tie_among_themselves():
    raws = {1: {"A": 0.5, "B": 0.5}, 2: {"A": INF, "B": math.nan}, 3: {}}
    scores = helm_scores(raws, TASKS)
    assert scores == pytest.approx({1: 1.0, 2: 0.0625, 3: 0.0625})
    assert helm_failed(raws, TASKS) == {2, 3}
    assert step_weights(scores, failed=helm_failed(raws, TASKS)) == {1: 1.0, 2: 0.0, 3: 0.0}


def test_all_dropped_scores_zero():
    assert helm_scores({1: {"A": 0.1}}, TASKS, dropped={"A", "B"}) == {1: 0.0}
