"""Exact answer (BoolQ, MAWPS): the first yes/no word or first number of a generated answer."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from finetune.competition import EvalTaskSpec
from finetune.datasets.samples import ExactAnswerSample
from finetune.eval.methods.base import (
    check_samples,
    fraction_wrong,
    generation_of,
    generation_request,
)
from finetune.eval.prompting import PromptContext, decode, prompt_ids
from finetune.eval.requests import Engine, GenerationRequest, ProgressCallback

YES_NO = frozenset({"yes", "no"})
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|-?\.\d+")
_NON_WORD = re.compile(r"\W")
# Answers are written with a few decimals at most; this absorbs float formatting only.
NUMBER_REL_TOL = 1e-6
NUMBER_ABS_TOL = 1e-6


def user_text(sample: ExactAnswerSample) -> str:
    """The passage (if any), a blank line, then the question."""
    return f"{sample.context}\n\n{sample.prompt}" if sample.context else sample.prompt


def build_requests(
    samples: Sequence[ExactAnswerSample], spec: EvalTaskSpec, ctx: PromptContext
) -> list[GenerationRequest]:
    """One greedy request per sample."""
    generation = generation_of(spec)
    return [
        generation_request(
            prompt_ids(ctx, user_text(s), reserve=generation.max_new_tokens), generation, ctx
        )
        for s in samples
    ]


def first_number(text: str) -> float | None:
    """The first number in `text` (thousands commas allowed), or None."""
    match = _NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def first_word_of(text: str, words: frozenset[str]) -> str | None:
    """The first word of `text` (case-insensitive) that is in `words`, or None."""
    for word in _NON_WORD.sub(" ", text.lower()).split():
        if word in words:
            return word
    return None


def is_correct(sample: ExactAnswerSample, response: str) -> bool:
    """Whether the response's first candidate answer matches one of the sample's answers."""
    if sample.kind == "number":
        found = first_number(response)
        if found is None:
            return False
        for answer in sample.answers:
            expected = first_number(answer)
            if expected is not None and math.isclose(
                found, expected, rel_tol=NUMBER_REL_TOL, abs_tol=NUMBER_ABS_TOL
            ):
                return True
        return False
    answers = frozenset(a.strip().lower() for a in sample.answers)
    return first_word_of(response, YES_NO | answers) in answers


def score_responses(samples: Sequence[ExactAnswerSample], responses: Sequence[str]) -> float:
    """Fraction of samples answered wrongly."""
    return fraction_wrong([is_correct(s, r) for s, r in zip(samples, responses, strict=True)])


def run(
    engine: Engine,
    samples: Sequence[ExactAnswerSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of EXACT_ANSWER: fraction incorrect."""
    check_samples(samples, ExactAnswerSample, spec)
    results = engine.generate(build_requests(samples, spec, ctx), progress)
    return score_responses(samples, [decode(ctx.tokenizer, r.token_ids) for r in results])
