"""Pure functions that shape one dataset row (a plain dict) into one sample.

Each shaper raises `ValueError` with a short reason for a row it cannot use; the sampler
logs the reason and skips the row. No I/O and no randomness here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from finetune.datasets.samples import (
    ExactAnswerSample,
    MultipleChoiceSample,
    ReferenceSample,
    TextSample,
)

LETTERS = ("A", "B", "C", "D")

REASONING_SYSTEM_PROMPT = (
    "You are a careful problem solver. Before you answer, think the problem through at "
    "length, step by step, inside <think> and </think> tags. After the closing </think> tag, "
    "give only the final answer, in the exact form the question asks for."
)

# One worked example before the question, as the reference subnet did, so that a model
# which has never seen the format still knows to answer with a single letter.
MMLU_EXAMPLE_PREFIX = (
    "[Example]\nWhich planet is closest to the Sun?\nA. Venus\nB. Mercury\nC. Mars\n"
    "D. Earth\nAnswer: B\n\n[Question]\n"
)

_OPTION_LINE = re.compile(r"(?m)^\s*\(?([A-D])[.):]\s*(.+?)\s*$")
_CODE_OUTPUT = re.compile(r'\{\s*"output"\s*:')


def _text(row: Mapping[str, Any], *keys: str) -> str:
    for key in keys:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise ValueError(f"no non-empty text in any of the fields {list(keys)}")


# -- multiple choice -------------------------------------------------------------------------


def shape_mmlu(row: Mapping[str, Any], *, example_prefix: str = "") -> MultipleChoiceSample:
    """A multiple-choice question with options A-D in its text and a letter answer.

    Accepts the subnet-1 layout (``challenge`` with the options, ``reference`` letter), a
    plain ``question``/``answer`` letter pair, or the MMLU layout (``question``, a list of
    four ``choices``, ``answer`` index 0-3).
    """
    choices = row.get("choices")
    if isinstance(choices, Sequence) and not isinstance(choices, str):
        question, answer = _from_choice_list(row, choices)
    else:
        question = _text(row, "challenge", "question")
        answer = str(row.get("reference", row.get("answer", ""))).strip().upper()
    if answer not in LETTERS:
        raise ValueError(f"answer {answer!r} is not one of A-D")
    missing = [letter for letter in LETTERS if letter not in _options(question)]
    if missing:
        raise ValueError(f"question text lacks options {missing}")
    return MultipleChoiceSample(question=example_prefix + question, answer=answer)


def _from_choice_list(row: Mapping[str, Any], choices: Sequence[Any]) -> tuple[str, str]:
    if len(choices) != 4 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise ValueError(f"need four non-empty choices, got {len(choices)}")
    index = row.get("answer")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 4:
        raise ValueError(f"answer index {index!r} is not in 0..3")
    stem = _text(row, "question")
    lines = [f"{letter}. {choice.strip()}" for letter, choice in zip(LETTERS, choices, strict=True)]
    return stem + "\n" + "\n".join(lines), LETTERS[index]


def _option_block(question: str) -> tuple[int, dict[str, str]] | None:
    """The question's options: the last run of four (non-blank) lines lettered A, B, C, D.

    Option-like lines inside the stem ("A) the first law ...") are not options: only the
    final A-D block is (9 of the 14,042 MMLU questions have such a line in their stem).

    Returns:
        (offset where the option block starts, letter -> option text), or None.
    """
    lines = [m for m in re.finditer(r"(?m)^.*$", question) if m.group(0).strip()]  # blank lines between
    parsed = [_OPTION_LINE.fullmatch(m.group(0)) for m in lines]
    for i in range(len(lines) - 4, -1, -1):
        block = parsed[i : i + 4]
        if all(block) and [m.group(1) for m in block] == list(LETTERS):  # type: ignore[union-attr]
            return lines[i].start(), {m.group(1): m.group(2) for m in block}  # type: ignore[union-attr]
    return None


def _options(question: str) -> dict[str, str]:
    found = _option_block(question)
    return found[1] if found else {}


def mcq_to_qa(sample: MultipleChoiceSample) -> tuple[str, str]:
    """(question stem, text of the correct option) of a multiple-choice sample.

    Used to feed IF-eval, whose keywords come from the expected answer. The example prefix,
    if any, is dropped.

    Raises:
        ValueError: The options cannot be found in the question text.
    """
    text = sample.question
    if text.startswith(MMLU_EXAMPLE_PREFIX):
        text = text[len(MMLU_EXAMPLE_PREFIX) :]
    found = _option_block(text)
    if found is None or sample.answer not in found[1]:
        raise ValueError("options not found in the question text")
    start, options = found
    stem = text[:start].strip()
    if not stem:
        raise ValueError("empty question stem")
    return stem, options[sample.answer]


# -- documents ---------------------------------------------------------------------------------


def shape_fineweb(row: Mapping[str, Any], *, max_chars: int = 0) -> TextSample:
    """A web document, cut to `max_chars` characters when positive (tokens are cut later)."""
    text = _text(row, "text", "content")
    if max_chars > 0:
        text = text[:max_chars]
    return TextSample(text=text)


# -- reasoning traces -------------------------------------------------------------------------


def _two_messages(row: Mapping[str, Any]) -> tuple[str, str]:
    messages = row.get("messages")
    if isinstance(messages, str):  # some exports keep the list JSON-encoded
        try:
            messages = json.loads(messages)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
            raise ValueError("messages is a string but not JSON") from exc
    if not isinstance(messages, Sequence) or len(messages) != 2:
        size = len(messages) if isinstance(messages, Sequence) else type(messages).__name__
        raise ValueError(f"need exactly two messages (user, assistant), got {size}")
    user, assistant = messages
    if not (isinstance(user, Mapping) and isinstance(assistant, Mapping)):
        raise ValueError("messages are not objects")
    if (user.get("role"), assistant.get("role")) != ("user", "assistant"):
        raise ValueError(f"roles are {user.get('role')!r}, {assistant.get('role')!r}")
    return _text(user, "content"), _text(assistant, "content")


def shape_synthetic_1(
    row: Mapping[str, Any],
    *,
    task_types: Sequence[str] = ("verifiable_math", "code_output_prediction"),
) -> ReferenceSample:
    """A SYNTHETIC-1 SFT row: user question, assistant trace ending in its final answer.

    Row fields (assumed from the dataset card): ``task_type`` and ``messages`` (user,
    assistant). The reference is the assistant text up to the end of the line holding the
    last final answer, ``\\boxed{…}`` for verifiable_math and ``{"output": …}`` for
    code_output_prediction; that answer must come after ``</think>`` when the tag is present.
    Text after the answer line (restatements, sign-offs) is dropped.
    """
    task_type = row.get("task_type")
    if task_type not in task_types:
        raise ValueError(f"task_type {task_type!r} is not one of {list(task_types)}")
    question, answer = _two_messages(row)
    if task_type == "verifiable_math":
        start, end = _last_boxed(answer)
    elif task_type == "code_output_prediction":
        start, end = _last_code_output(answer)
    else:
        raise ValueError(f"no final-answer rule for task_type {task_type!r}")
    think_end = answer.rfind("</think>")
    if think_end >= 0 and start < think_end:
        raise ValueError("the final answer is not after </think>")
    line_end = answer.find("\n", end)
    reference = answer if line_end < 0 else answer[:line_end]
    return ReferenceSample(
        prompt=question, reference=reference.rstrip(), system=REASONING_SYSTEM_PROMPT
    )


def _last_boxed(text: str) -> tuple[int, int]:
    start = text.rfind("\\boxed{")
    if start < 0:
        raise ValueError("no \\boxed{...} final answer")
    depth = 0
    for i in range(start + len("\\boxed"), len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                if i == start + len("\\boxed{"):
                    raise ValueError("empty \\boxed{}")
                return start, i + 1
    raise ValueError("unbalanced braces in the last \\boxed{")


def _last_code_output(text: str) -> tuple[int, int]:
    matches = list(_CODE_OUTPUT.finditer(text))
    if not matches:
        raise ValueError('no {"output": ...} final answer')
    start = matches[-1].start()
    try:
        value, end = json.JSONDecoder().raw_decode(text, start)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
        raise ValueError(f'the last {{"output": ...}} is not valid JSON: {exc}') from exc
    if not isinstance(value, dict) or "output" not in value:
        raise ValueError('the final answer object has no "output"')
    return start, end


def shape_codeforces(row: Mapping[str, Any], *, max_chars: int = 0) -> ReferenceSample:
    """A codeforces-cots row: user problem, assistant trace; the reference is the trace.

    Rows longer than `max_chars` (prompt plus trace, when positive) are rejected; rows over
    the sequence length in tokens are dropped when scored (`drop_if_longer`).
    """
    question, answer = _two_messages(row)
    if max_chars > 0 and len(question) + len(answer) > max_chars:
        raise ValueError(f"longer than {max_chars} characters")
    return ReferenceSample(
        prompt=question, reference=answer, system=REASONING_SYSTEM_PROMPT, drop_if_longer=True
    )


# -- exact answers ---------------------------------------------------------------------------


def shape_boolq(row: Mapping[str, Any]) -> ExactAnswerSample:
    """A BoolQ row (``question``, ``passage``, boolean ``answer``) -> yes/no question."""
    question = _text(row, "question")
    passage = _text(row, "passage")
    answer = row.get("answer")
    if isinstance(answer, str) and answer.strip().lower() in {"true", "false", "yes", "no"}:
        answer = answer.strip().lower() in {"true", "yes"}
    if not isinstance(answer, bool):
        raise ValueError(f"answer {answer!r} is not a boolean")
    question = question[0].upper() + question[1:]
    if not question.endswith("?"):
        question += "?"
    return ExactAnswerSample(
        prompt=question, answers=("yes",) if answer else ("no",), kind="text", context=passage
    )


def shape_mawps(row: Mapping[str, Any]) -> ExactAnswerSample:
    """A MAWPS word problem with a numeric result (Calc-mawps: ``question``, ``result``)."""
    question = _text(row, "question", "Question", "problem")
    value = _number(row)
    return ExactAnswerSample(prompt=question, answers=(format_number(value),), kind="number")


def _number(row: Mapping[str, Any]) -> float:
    for key in ("result_float", "result", "answer", "Answer"):
        raw = row.get(key)
        if raw is None or isinstance(raw, bool):
            continue
        try:
            value = float(str(raw).strip().replace(",", ""))
        except ValueError:
            continue
        if math.isfinite(value):
            return value
    raise ValueError("no finite numeric result in result_float/result/answer")


def format_number(value: float) -> str:
    """Canonical text of a number: integers without a decimal point, else 10 significant digits."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10g}"


__all__ = [
    "MMLU_EXAMPLE_PREFIX",
    "REASONING_SYSTEM_PROMPT",
    "format_number",
    "mcq_to_qa",
    "shape_boolq",
    "shape_codeforces",
    "shape_fineweb",
    "shape_mawps",
    "shape_mmlu",
    "shape_synthetic_1",
]
