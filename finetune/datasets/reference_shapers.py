"""The reference validator's row reading and sample shaping (`DataRules.draws="reference"`).

Pure functions, one per data set, that turn what the reference keeps of a row into the sample
its `tokenize()` sees (macrocosm-os/finetuning 3.1.0, `Synthetic1SFTLoader`,
`CodeforcesCOTSLoader`, `HuggingFaceLoader`), quirks included:

- SYNTHETIC-1-SFT: ``messages[0]`` is the question and ``messages[1]`` the answer text, whatever
  their roles; the final answer is the last non-greedy ``\\boxed{(.*?)}`` (math; so
  ``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1``) or ``{"output": "(.*?)"}`` (code); the reference
  text is the stripped trace before the last ``\\boxed{answer}`` + ``" \\boxed{answer}"``, or the
  text without the *first* occurrence of the output object + ``' {"output": "answer"}'``. Rows
  without a final answer are kept with an empty one; the question is neither stripped nor
  checked.
- codeforces-cots: exactly two messages (roles unchecked), kept iff
  ``len(q)//4 + len(t)//4 + 10 <= 16384`` (an empty text counts 0); reference = stripped trace.
- FineWeb: the raw ``text``, empty ones included.

`None` means the reference skips the row; `DataUnavailable` means its load or tokenisation
fails as a whole (a kept trace that is not text), or that a row the reference keeps cannot be
represented here (a question that is not text: reason ``not_reproduced``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from finetune.datasets.samples import ReferenceSample, TextSample
from finetune.errors import DataUnavailable

# The system turn of both reasoning data sets, verbatim (one line in the reference).
REFERENCE_SYSTEM_PROMPT = (
    "You are a reflective AI capable of using extended chains of thought to consider the "
    "problem thoroughly and deliberate through systematic reasoning to arrive at a correct "
    "solution before answering. Enclose your internal monologue in <think> ... </think> tags, "
    "then provide your final answer in the format that the user requests."
)
SFT_TASK_TYPES = ("verifiable_math", "code_output_prediction")
CHARS_PER_TOKEN = 4  # the reference's length estimate: characters // 4 per text
ESTIMATE_MARGIN = 10  # added to the estimate "for special tokens"

_BOXED = re.compile(r"\\boxed\{(.*?)\}")  # non-greedy, "." stops at a newline
_OUTPUT = re.compile(r'\{"output": "(.*?)"\}')  # this exact spacing only


# -- what the reference keeps of a fetched row (it reads these as the page arrives) ---------


def sft_entry(row: Mapping[str, Any]) -> tuple[Any, Any]:
    """(messages, task type) of a SYNTHETIC-1-SFT row; a row without messages ends the load."""
    if "messages" not in row:
        raise DataUnavailable("SYNTHETIC-1-SFT row without messages (the reference's KeyError)")
    return row["messages"], row.get("task_type", "unknown")


def codeforces_entry(row: Mapping[str, Any]) -> Any:
    """The messages of a codeforces-cots row; a row without messages ends the load."""
    if "messages" not in row:
        raise DataUnavailable("codeforces-cots row without messages (the reference's KeyError)")
    return row["messages"]


def fineweb_entry(row: Mapping[str, Any]) -> Any:
    """The text of a FineWeb row; a row without text ends the load."""
    if "text" not in row:
        raise DataUnavailable("FineWeb row without text (the reference's KeyError)")
    return row["text"]


# -- samples ------------------------------------------------------------------------------


def sft_sample(
    messages: Any, task_type: Any, task_types: Sequence[str] = SFT_TASK_TYPES
) -> ReferenceSample | None:
    """The reference's sample of one SYNTHETIC-1-SFT entry, or None where it skips the row.

    Args:
        messages: The row's ``messages`` as served.
        task_type: The row's ``task_type`` ("unknown" when missing).
        task_types: Task types kept (compared with ``==``, like the reference's list).

    Raises:
        DataUnavailable: The row is kept but its question is not text (``not_reproduced``).
    """
    if task_type not in task_types:
        return None
    pair = _first_two_contents(messages)
    if pair is None:
        return None
    question, text = pair
    if not isinstance(text, str):  # re.findall raises: the reference skips the row
        return None
    if task_type == "verifiable_math":
        reference = _math_reference(text)
    elif task_type == "code_output_prediction":
        reference = _code_reference(text)
    else:
        return None  # a kept type without a parse rule: the reference logs and skips it
    return ReferenceSample(
        prompt=_question(question), reference=reference, system=REFERENCE_SYSTEM_PROMPT
    )


def _math_reference(text: str) -> str:
    answers = _BOXED.findall(text)
    answer = answers[-1] if answers else ""
    trace = text
    if answer:
        cut = text.rfind("\\boxed{" + answer + "}")
        if cut > -1:
            trace = text[:cut].strip()
    return trace.strip() + " \\boxed{" + answer + "}"


def _code_reference(text: str) -> str:
    answers = _OUTPUT.findall(text)
    answer = answers[-1] if answers else ""
    trace = text
    if answer:
        # The first occurrence of the object goes, which may precede the one matched last.
        trace = text.replace('{"output": "' + answer + '"}', "", 1)
    return trace.strip() + ' {"output": "' + answer + '"}'


def codeforces_sample(messages: Any, max_estimated_tokens: int) -> ReferenceSample | None:
    """The reference's sample of one codeforces-cots row, or None where it skips the row.

    Args:
        messages: The row's ``messages`` as served.
        max_estimated_tokens: The reference's ``max_sequence_length`` (16384).

    Raises:
        DataUnavailable: The row is kept but its trace is not text (the reference's tokenize
            fails, and the task with it), or its question is not text (``not_reproduced``).
    """
    if not isinstance(messages, list) or len(messages) != 2:
        return None  # a 2-character string or 2-key object fails on indexing: skipped too
    pair = _first_two_contents(messages)
    if pair is None:
        return None
    question, trace = pair
    sizes = (_estimate(question), _estimate(trace))
    if None in sizes:
        return None
    if sum(sizes) + ESTIMATE_MARGIN > max_estimated_tokens:  # type: ignore[arg-type]
        return None
    if not isinstance(trace, str):
        raise DataUnavailable(f"codeforces-cots trace {type(trace).__name__} kept: tokenize fails")
    return ReferenceSample(
        prompt=_question(question), reference=trace.strip(), system=REFERENCE_SYSTEM_PROMPT
    )


def _estimate(text: Any) -> int | None:
    """``0 if not text else len(text) // 4``; None where `len` raises (the row is skipped)."""
    if not text:
        return 0
    if isinstance(text, str | list | dict):
        return len(text) // CHARS_PER_TOKEN
    return None


def fineweb_sample(text: Any) -> TextSample:
    """The reference's FineWeb sample: the text as served, empty or not.

    Raises:
        DataUnavailable: The text is not a string (the reference's tokenizer fails on it).
    """
    if not isinstance(text, str):
        raise DataUnavailable(f"FineWeb text of type {type(text).__name__}: tokenize fails")
    return TextSample(text=text)


def _first_two_contents(messages: Any) -> tuple[Any, Any] | None:
    """``messages[0]["content"], messages[1]["content"]``, or None where indexing raises."""
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    first, second = messages[0], messages[1]
    if not (isinstance(first, dict) and isinstance(second, dict)):
        return None
    if "content" not in first or "content" not in second:
        return None
    return first["content"], second["content"]


def _question(question: Any) -> str:
    if not isinstance(question, str):
        raise DataUnavailable(
            f"a kept row's question is {type(question).__name__}, not text: the reference's chat "
            "template would render it; not reproduced",
            reason="not_reproduced",
        )
    return question


__all__ = [
    "CHARS_PER_TOKEN",
    "REFERENCE_SYSTEM_PROMPT",
    "SFT_TASK_TYPES",
    "codeforces_entry",
    "codeforces_sample",
    "fineweb_entry",
    "fineweb_sample",
    "sft_entry",
    "sft_sample",
]
