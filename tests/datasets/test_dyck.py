import hashlib
import json
import random

import pytest

from finetune.datasets.dyck import (
    MAX_PAIRS,
    MAX_REMOVED,
    MIN_PAIRS,
    PAIRS,
    PROMPT_PREFIX,
    generate_dyck,
    is_balanced,
)

GOLDEN = "5dbdb114bdce0d878790ba84962900fbc4d8b170cc42f9603184aadb4ed3dd20"


def _fingerprint(samples) -> str:
    # The data a validator scores, not the record's shape: a new flag field with its default
    # leaves the samples, and so this hash, unchanged.
    data = [{"prompt": s.prompt, "reference": s.reference, "system": s.system} for s in samples]
    payload = json.dumps(data, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ("", True),
        ("( )", True),
        ("([{<>}])", True),
        ("( [ ] ) { } < < > >", True),
        ("(", False),
        (")", False),
        ("( ]", False),
        ("([)]", False),
        ("( ) )", False),
        ("( a )", False),
    ],
)
def test_is_balanced(sequence, expected):
    assert is_balanced(sequence) is expected


def test_samples_follow_the_spec():
    closers = set(PAIRS.values())
    removed_counts, pair_counts = set(), set()
    for sample in generate_dyck(seed=5, count=400):
        assert sample.prompt.startswith(PROMPT_PREFIX)
        shown = sample.prompt[len(PROMPT_PREFIX) :].split(" ")
        missing = sample.reference.split(" ")
        full = shown + missing
        assert all(len(c) == 1 for c in full)  # single spaces between characters
        assert is_balanced("".join(full))
        assert not is_balanced("".join(shown))
        assert set(missing) <= closers
        assert 1 <= len(missing) <= MAX_REMOVED
        assert len(full) % 2 == 0 and MIN_PAIRS <= len(full) // 2 <= MAX_PAIRS
        removed_counts.add(len(missing))
        pair_counts.add(len(full) // 2)
    assert removed_counts == {1, 2, 3}
    assert pair_counts == set(range(MIN_PAIRS, MAX_PAIRS + 1))


def test_same_seed_same_samples_and_global_rng_untouched():
    random.seed(3)
    state = random.getstate()
    first = generate_dyck(123, 50)
    assert random.getstate() == state
    assert generate_dyck(123, 50) == first
    assert generate_dyck(124, 50) != first


def test_golden_fingerprint():
    # Pinned: a change here changes every validator's data; bump the task version with it.
    assert _fingerprint(generate_dyck(123, 5)) == GOLDEN


def test_bad_count():
    with pytest.raises(ValueError):
        generate_dyck(1, -1)
    assert generate_dyck(1, 0) == []
