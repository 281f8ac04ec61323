"""The reference's row reading and sample shaping, on plain values (quirks included)."""

from __future__ import annotations

import pytest

from finetune.datasets.reference_shapers import (
    REFERENCE_SYSTEM_PROMPT,
    codeforces_entry,
    codeforces_sample,
    fineweb_entry,
    fineweb_sample,
    sft_entry,
    sft_sample,
)
from finetune.datasets.samples import ReferenceSample, TextSample
from finetune.errors import DataUnavailable

MATH = "verifiable_math"
CODE = "code_output_prediction"


def _chat(user, assistant):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def _reference(messages, task_type=MATH):
    sample = sft_sample(messages, task_type)
    assert sample is not None
    return sample.reference


def test_the_system_prompt_is_the_references_verbatim():
    assert REFERENCE_SYSTEM_PROMPT == (
        "You are a reflective AI capable of using extended chains of thought to consider the "
        "problem thoroughly and deliberate through systematic reasoning to arrive at a correct "
        "solution before answering. Enclose your internal monologue in <think> ... </think> "
        "tags, then provide your final answer in the format that the user requests."
    )


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ("<think>\nx\n</think>\n\nSo it is $\\boxed{143}$.", "<think>\nx\n</think>\n\nSo it is $ \\boxed{143}"),
        ("The ratio is $\\boxed{\\frac{19}{2}}$", "The ratio is $ \\boxed{\\frac{19}"),  # non-greedy
        ("First \\boxed{3}, finally \\boxed{7}.\nDone.", "First \\boxed{3}, finally \\boxed{7}"),
        ("The result is 78.", "The result is 78. \\boxed{}"),  # kept, empty answer
        ("It is \\boxed{} (5).", "It is \\boxed{} (5). \\boxed{}"),
        ("\\boxed{4}", " \\boxed{4}"),
        ("  a \\boxed{1\n2} b  ", "a \\boxed{1\n2} b \\boxed{}"),  # "." stops at a newline
    ],
)
def test_math_reference_is_the_trace_before_the_last_box_and_the_box(text, reference):
    assert _reference(_chat("Q", text)) == reference


@pytest.mark.parametrize(
    ("text", "reference"),
    [
        ('prints 315.\n{"output": "315"}', 'prints 315. {"output": "315"}'),
        (  # the first occurrence goes, not the last
            'Guess {"output": "4968"} early.\nFinal:\n{"output": "4968"}\n',
            'Guess  early.\nFinal:\n{"output": "4968"} {"output": "4968"}',
        ),
        ('{"output":"5"}', '{"output":"5"} {"output": ""}'),  # only this exact spacing matches
        ("It prints 5.", 'It prints 5. {"output": ""}'),
    ],
)
def test_code_reference_removes_the_first_output_object_and_appends_it(text, reference):
    assert _reference(_chat("Q", text), CODE) == reference


def test_messages_are_taken_by_position_whatever_their_roles():
    three = [{"role": "system", "content": "Be brief."}, *_chat("Q?", "\\boxed{1}")]
    sample = sft_sample(three, MATH)
    assert sample == ReferenceSample(
        prompt="Be brief.", reference="Q? \\boxed{}", system=REFERENCE_SYSTEM_PROMPT
    )
    assert sft_sample(_chat("  padded question  ", "\\boxed{2}"), MATH).prompt == (
        "  padded question  "  # never stripped
    )


@pytest.mark.parametrize(
    ("messages", "task_type"),
    [
        (_chat("Q", "\\boxed{1}")[:1], MATH),  # one message
        (_chat("Q", None), MATH),  # null content: re.findall raises
        ("[{...}]", MATH),  # a string is not a list of messages
        ([{"role": "user"}, {"content": "x"}], MATH),
        (_chat("Q", "\\boxed{1}"), "unknown"),
        (_chat("Q", "\\boxed{1}"), None),
    ],
)
def test_rows_the_reference_skips(messages, task_type):
    assert sft_sample(messages, task_type) is None


def test_kept_types_without_a_parse_rule_are_skipped():
    assert sft_sample(_chat("Q", "x"), "other", task_types=("other",)) is None


def test_a_kept_row_whose_question_is_not_text_is_not_reproduced():
    with pytest.raises(DataUnavailable) as info:
        sft_sample(_chat(None, "\\boxed{1}"), MATH)
    assert info.value.reason == "not_reproduced"


def test_entries_need_messages_and_default_the_task_type():
    assert sft_entry({"messages": [1]}) == ([1], "unknown")
    assert codeforces_entry({"messages": []}) == []
    assert fineweb_entry({"text": ""}) == ""
    for entry, row in ((sft_entry, {}), (codeforces_entry, {"id": 1}), (fineweb_entry, {})):
        with pytest.raises(DataUnavailable, match="KeyError"):
            entry(row)


LIMIT = 16_384


def test_codeforces_length_estimate_boundary():
    question = "q" * 37  # 37 // 4 = 9
    at_limit = "t" * (4 * (LIMIT - 10 - 9) + 3)  # the floor of /4 keeps 3 extra characters
    assert codeforces_sample(_chat(question, at_limit), LIMIT) is not None
    assert codeforces_sample(_chat(question, at_limit + "t"), LIMIT) is None


def test_codeforces_keeps_empty_texts_and_strips_only_the_trace():
    sample = codeforces_sample(_chat(" problem ", "  trace \n"), LIMIT)
    assert sample == ReferenceSample(
        prompt=" problem ", reference="trace", system=REFERENCE_SYSTEM_PROMPT
    )
    assert codeforces_sample(_chat("p", ""), LIMIT).reference == ""


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "s"}, *_chat("q", "t")],
        _chat("q", "t")[:1],
        "ab",  # two characters: indexing fails
        {"a": 1, "b": 2},
        None,
        _chat(5, "t"),  # len(5) raises
    ],
)
def test_codeforces_rows_the_reference_skips(messages):
    assert codeforces_sample(messages, LIMIT) is None


def test_a_kept_codeforces_trace_that_is_not_text_fails_the_task():
    with pytest.raises(DataUnavailable, match="tokenize fails"):
        codeforces_sample(_chat("q", None), LIMIT)  # counts 0, kept; .strip() raises later


def test_fineweb_texts_are_kept_raw():
    assert fineweb_sample("") == TextSample("")
    assert fineweb_sample("  x ") == TextSample("  x ")
    with pytest.raises(DataUnavailable):
        fineweb_sample(None)
