import pytest

from finetune.competition import EpsilonSpec
from finetune.scoring import epsilon

SPEC = EpsilonSpec(start=0.05, end=0.01, decay_blocks=7200)


def test_endpoints_and_midpoint():
    assert epsilon(SPEC, 1000, 1000) == pytest.approx(0.05)
    assert epsilon(SPEC, 1000 + 3600, 1000) == pytest.approx(0.03)
    assert epsilon(SPEC, 1000 + 7200, 1000) == pytest.approx(0.01)
    assert epsilon(SPEC, 10**9, 1000) == pytest.approx(0.01)


def test_model_from_the_future_gets_start():
    assert epsilon(SPEC, 1000, 5000) == pytest.approx(0.05)


def test_monotone_non_increasing_with_age():
    values = [epsilon(SPEC, 1000 + age, 1000) for age in range(0, 9000, 450)]
    assert values == sorted(values, reverse=True)
