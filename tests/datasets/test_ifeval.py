import dataclasses
import hashlib
import itertools
import json
import random

import pytest

from finetune.datasets import ifeval
from finetune.datasets.ifeval import (
    INCOMPATIBLE_KINDS,
    KEYWORD_KINDS,
    RULE_COUNTS,
    V1_KINDS,
    V2_KINDS,
    build_ifeval_prompt,
    describe_rule,
    extract_keywords,
    generate_ifeval,
    rules_compatible,
)
from finetune.datasets.samples import IfEvalRule
from finetune.errors import ConfigError, DataUnavailable, UnknownIdError

QA = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Why is the sky blue?", "Rayleigh scattering of sunlight by molecules in the atmosphere."),
    ("What do plants need for photosynthesis?", "Sunlight, water and carbon dioxide."),
    ("Who wrote Hamlet?", "William Shakespeare wrote the tragedy."),
    ("What is 2 + 2?", "4"),
    ("Which planet is largest?", "Jupiter is the largest planet in the solar system."),
]
GOLDEN_V2 = "718d4c0dd66a50f0bb9a32cc88d6e9dea9f817bf0610f8f3f7b743395d8e1539"
GOLDEN_V1 = "080ff54cc41c9b95908cf45ba784ab46582b316522cd6a0fd8544fff583d869c"


def _fingerprint(samples) -> str:
    payload = json.dumps([dataclasses.asdict(s) for s in samples], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


@pytest.fixture(scope="module")
def many_v2():
    return generate_ifeval(seed=11, count=2000, qa_pairs=QA, version=2)


def test_v1_has_the_first_seven_kinds_and_v2_adds_six():
    assert len(V1_KINDS) == 7 and V2_KINDS[:7] == V1_KINDS and len(V2_KINDS) == 13
    assert len(set(V2_KINDS)) == 13


def test_incompatible_pairs_never_co_occur(many_v2):
    for sample in many_v2:
        for a, b in itertools.combinations(sample.rules, 2):
            assert frozenset((a.kind, b.kind)) not in INCOMPATIBLE_KINDS
            assert a.kind != b.kind
            if a.kind in KEYWORD_KINDS and b.kind in KEYWORD_KINDS:
                assert all(a.keywords[i] != b.keywords[i] for i in (0, 1))


def test_v2_rule_counts_kinds_and_arguments(many_v2):
    low, high = RULE_COUNTS[2]
    counts = {len(s.rules) for s in many_v2}
    assert counts == set(range(low, high + 1))
    seen = {rule.kind for s in many_v2 for rule in s.rules}
    assert seen == set(V2_KINDS)
    for sample in many_v2:
        q1, q2 = sample.questions
        assert q1 != q2
        assert dict(QA)[q1] == sample.answers[0] and dict(QA)[q2] == sample.answers[1]
        own = [set(extract_keywords(answer)) for answer in sample.answers]
        for rule in sample.rules:
            _check_arguments(rule, own)


def _check_arguments(rule, own_keywords):
    if rule.kind in (ifeval.WORDS_AT_MOST, ifeval.WORDS_AT_LEAST):
        assert rule.n in (25, 30, 35, 40, 45)
    elif rule.kind == ifeval.SENTENCES_AT_MOST:
        assert 1 <= rule.n <= 3
    elif rule.kind == ifeval.SENTENCES_AT_LEAST:
        assert 2 <= rule.n <= 3
    elif rule.kind == ifeval.BULLETS_EXACTLY:
        assert 1 <= rule.n <= 3
    elif rule.kind == ifeval.CLOSING_PHRASE:
        assert rule.phrase in ifeval.CLOSING_PHRASES
    if rule.kind in KEYWORD_KINDS:
        # Each question's keyword is a content word of that question's own answer.
        assert all(rule.keywords[i] in own_keywords[i] for i in (0, 1)), rule
        if rule.kind == ifeval.KEYWORD_EXACTLY:
            assert 1 <= rule.n <= 4


def test_v1_uses_only_the_first_seven_kinds():
    samples = generate_ifeval(seed=4, count=1000, qa_pairs=QA, version=1)
    low, high = RULE_COUNTS[1]
    assert {len(s.rules) for s in samples} == set(range(low, high + 1))
    assert {r.kind for s in samples for r in s.rules} == set(V1_KINDS)
    for sample in samples:
        for a, b in itertools.combinations(sample.rules, 2):
            assert rules_compatible(a, b)


def test_no_keyword_rules_without_content_words():
    qa = [("One?", "1"), ("Two?", "the two"), ("Three?", "It is 3.")]
    samples = generate_ifeval(seed=2, count=300, qa_pairs=qa)
    assert not any(r.kind in KEYWORD_KINDS for s in samples for r in s.rules)
    assert all(2 <= len(s.rules) <= 5 for s in samples)


def test_extract_keywords():
    assert extract_keywords("The Eiffel Tower, which is in Paris; the tower is tall.") == (
        "eiffel",
        "tower",
        "paris",
        "tall",
    )
    assert extract_keywords("B") == ()
    assert extract_keywords("It is what it would have been.") == ()


def test_rules_compatible():
    rule = IfEvalRule
    assert not rules_compatible(rule(ifeval.ALL_UPPER), rule(ifeval.ALL_LOWER))
    assert not rules_compatible(rule(ifeval.QUOTATION), rule(ifeval.CLOSING_PHRASE, phrase="x"))
    assert not rules_compatible(rule(ifeval.WORDS_AT_MOST, n=25), rule(ifeval.WORDS_AT_LEAST, n=30))
    assert not rules_compatible(
        rule(ifeval.KEYWORD_FORBIDDEN, keyword="paris"),
        rule(ifeval.KEYWORD_INCLUDED, keyword="paris"),
    )
    assert rules_compatible(
        rule(ifeval.KEYWORD_FORBIDDEN, keyword="paris"),
        rule(ifeval.KEYWORD_INCLUDED, keyword="france"),
    )
    assert rules_compatible(rule(ifeval.NO_COMMAS), rule(ifeval.ALL_UPPER))


def test_same_seed_same_samples_and_global_rng_untouched():
    random.seed(5)
    state = random.getstate()
    first = generate_ifeval(123, 40, QA)
    assert random.getstate() == state
    assert generate_ifeval(123, 40, QA) == first
    assert generate_ifeval(124, 40, QA) != first


def test_golden_fingerprints():
    # Pinned: a change here changes every validator's data; bump the task version with it.
    assert _fingerprint(generate_ifeval(123, 5, QA, version=2)) == GOLDEN_V2
    assert _fingerprint(generate_ifeval(123, 5, QA, version=1)) == GOLDEN_V1


def test_describe_every_kind():
    for kind in V2_KINDS:
        text = describe_rule(IfEvalRule(kind, n=2, keyword="paris", phrase="That is all."))
        assert text and "None" not in text and "{" not in text
    assert describe_rule(IfEvalRule(ifeval.WORDS_AT_MOST, n=30)) == "Answer with at most 30 words."
    assert "1 sentence." in describe_rule(IfEvalRule(ifeval.SENTENCES_AT_MOST, n=1))
    assert '"paris" exactly 3 times' in describe_rule(
        IfEvalRule(ifeval.KEYWORD_EXACTLY, n=3, keyword="paris")
    )


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(UnknownIdError, match="all_upper"):
        describe_rule(IfEvalRule("all_uper"))


def test_prompt_quotes_the_question_and_numbers_the_rules():
    rules = (IfEvalRule(ifeval.NO_COMMAS), IfEvalRule(ifeval.WORDS_AT_LEAST, n=40))
    prompt = build_ifeval_prompt("Why is the sky blue?", rules)
    assert '"Why is the sky blue?"' in prompt
    assert "1. Do not use any commas." in prompt
    assert "2. Answer with at least 40 words." in prompt


def test_bad_inputs():
    with pytest.raises(DataUnavailable):
        generate_ifeval(1, 1, [("Same?", "a"), ("Same?", "b")])
    with pytest.raises(ConfigError):
        generate_ifeval(1, 1, QA, version=3)
    with pytest.raises(ValueError):
        generate_ifeval(1, -1, QA)
    assert generate_ifeval(1, 0, QA) == []
