import hashlib
import json
import random
import re

import pytest

from finetune.datasets.word_sorting import (
    MAX_WORDS,
    MIN_WORDS,
    PROMPT_PREFIX,
    generate_word_sorting,
    load_word_list,
)
from finetune.errors import DataUnavailable


def _fingerprint(samples) -> str:
    # The data a validator scores, not the record's shape: a new flag field with its default
    # leaves the samples, and so this hash, unchanged.
    data = [{"prompt": s.prompt, "reference": s.reference, "system": s.system} for s in samples]
    payload = json.dumps(data, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _prompt_words(prompt: str) -> list[str]:
    assert prompt.startswith(PROMPT_PREFIX) and prompt.endswith(".")
    return prompt[len(PROMPT_PREFIX) : -1].split(" ")


def test_bundled_word_list_is_basic_english():
    words = load_word_list()
    assert len(words) >= 1500
    assert list(words) == sorted(set(words))
    assert all(re.fullmatch(r"[a-z]{3,}", w) for w in words)
    assert {"apple", "house", "river"} <= set(words)


def test_samples_follow_the_spec():
    vocabulary = set(load_word_list())
    samples = generate_word_sorting(seed=7, count=300)
    assert len(samples) == 300
    sizes = set()
    for sample in samples:
        words = _prompt_words(sample.prompt)
        sizes.add(len(words))
        assert MIN_WORDS <= len(words) <= MAX_WORDS
        assert len(set(words)) == len(words)
        assert set(words) <= vocabulary
        assert sample.reference == " ".join(sorted(words))
        assert sample.system is None
    assert sizes == set(range(MIN_WORDS, MAX_WORDS + 1))


def test_same_seed_same_samples_and_global_rng_untouched():
    random.seed(99)
    state = random.getstate()
    first = generate_word_sorting(123, 50)
    assert random.getstate() == state
    assert generate_word_sorting(123, 50) == first
    assert generate_word_sorting(124, 50) != first
    assert generate_word_sorting(123, 10) == first[:10]  # a prefix does not depend on count


GOLDEN = "5ef016a68dca21663bfe690eeef7d45b806a6d767b0550a9b34dab68de225518"


def test_golden_fingerprint():
    # Pinned: a change here changes every validator's data; bump the task version with it.
    assert _fingerprint(generate_word_sorting(123, 5)) == GOLDEN


def test_custom_pool_is_cleaned_and_used():
    pool = (
        "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike"
        " november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
    ).split()
    samples = generate_word_sorting(1, 20, words=pool + ["UPPER", "ab", "two words", "alpha"])
    for sample in samples:
        assert set(_prompt_words(sample.prompt)) <= set(pool)


def test_too_small_pool_and_bad_count():
    with pytest.raises(DataUnavailable):
        generate_word_sorting(1, 1, words=["apple", "pear", "Plum", "ab"] * 10)
    with pytest.raises(ValueError):
        generate_word_sorting(1, -1)
    assert generate_word_sorting(1, 0) == []
