import math

import pytest

from finetune.competition import EvalTaskSpec, Method, Normalization, NormKind
from finetune.scoring import aggregate_score, effective_weights, normalised_scores

INF = math.inf
TASKS = (
    EvalTaskSpec(name="MC", method=Method.MULTIPLE_CHOICE, dataset="d", weight=0.75, samples=1),
    EvalTaskSpec(
        name="SORT",
        method=Method.REFERENCE_LOSS,
        dataset="d",
        weight=0.25,
        samples=1,
        normalization=Normalization(kind=NormKind.INVERSE_EXPONENTIAL, ceiling=40.0),
    ),
)


def _inv_exp(raw, c):
    return (1 - math.exp(-raw / c)) / (1 - math.exp(-1))


def test_weighted_sum_of_normalised_scores():
    score = aggregate_score({"MC": 0.2, "SORT": 10.0}, TASKS)
    assert score == pytest.approx(0.75 * 0.2 + 0.25 * _inv_exp(10.0, 40.0))
    # At or above the ceiling the normalised score is exactly 1.
    assert aggregate_score({"MC": 0.0, "SORT": 40.0}, TASKS) == pytest.approx(0.25)
    assert aggregate_score({"MC": 0.0, "SORT": 1e6}, TASKS) == pytest.approx(0.25)


def test_dropped_task_rescales_the_rest():
    assert effective_weights(TASKS, {"MC"}) == {"SORT": 1.0}
    score = aggregate_score({"MC": INF, "SORT": 10.0}, TASKS, dropped={"MC"})
    assert score == pytest.approx(_inv_exp(10.0, 40.0))


def test_all_dropped_scores_inf():
    assert effective_weights(TASKS, {"MC", "SORT"}) == {}
    assert aggregate_score({"MC": 0.1, "SORT": 1.0}, TASKS, dropped={"MC", "SORT"}) == INF


@pytest.mark.parametrize("bad", [math.nan, -INF])
def test_nan_or_negative_infinity_is_a_failure(bad):
    assert aggregate_score({"MC": 0.1, "SORT": bad}, TASKS) == INF
    assert normalised_scores({"MC": 0.1, "SORT": bad}, TASKS)["SORT"] == INF


def test_infinite_raw_is_the_worst_score_under_a_capped_normalisation():
    # The degeneracy gate reports inf: worst on that task, the model still competes.
    assert normalised_scores({"MC": 0.1, "SORT": INF}, TASKS)["SORT"] == 1.0
    assert aggregate_score({"MC": 0.1, "SORT": INF}, TASKS) == pytest.approx(0.75 * 0.1 + 0.25)
    # Without a cap, inf stays inf and the model fails.
    assert aggregate_score({"MC": INF, "SORT": 1.0}, TASKS) == INF


def test_missing_task_result_is_a_failure():
    assert aggregate_score({"MC": 0.1}, TASKS) == INF
