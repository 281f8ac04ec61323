"""Multiple choice (SYNTHETIC_MMLU): by greedy generation, or by next-token log-likelihood.

The question text already lists the lettered options; the user turn is the question alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from finetune.competition import EvalTaskSpec
from finetune.datasets.samples import MultipleChoiceSample
from finetune.eval.methods.base import (
    check_samples,
    fraction_wrong,
    generation_of,
    generation_request,
)
from finetune.eval.prompting import PromptContext, Tokenizer, decode, encode, prompt_ids
from finetune.eval.requests import (
    ChoiceRequest,
    ChoiceResult,
    Engine,
    GenerationRequest,
    GenerationResult,
    ProgressCallback,
)

_NON_WORD = re.compile(r"\W")


def first_choice(text: str, choices: Sequence[str]) -> str | None:
    """The first whitespace-separated word of `text` (non-word characters made spaces) that is
    exactly one of `choices`, or None. ``"(B) because"`` -> ``"B"``; ``"Because"`` -> None."""
    allowed = set(choices)
    for word in _NON_WORD.sub(" ", text).split():
        if word in allowed:
            return word
    return None


def build_generation_requests(
    samples: Sequence[MultipleChoiceSample], spec: EvalTaskSpec, ctx: PromptContext
) -> list[GenerationRequest]:
    """One greedy request per question (ours leaves room for the answer within the sequence
    length; the reference's rules cut the prompt to the sequence length itself)."""
    generation = generation_of(spec)
    return [
        generation_request(
            prompt_ids(ctx, s.question, reserve=generation.max_new_tokens), generation, ctx
        )
        for s in samples
    ]


def score_generations(
    samples: Sequence[MultipleChoiceSample],
    results: Sequence[GenerationResult],
    tokenizer: Tokenizer,
) -> float:
    """Fraction of questions whose first choice letter in the output is not the answer."""
    correct = [
        first_choice(decode(tokenizer, r.token_ids), s.choices) == s.answer
        for s, r in zip(samples, results, strict=True)
    ]
    return fraction_wrong(correct)


def letter_token_id(tokenizer: Tokenizer, letter: str) -> int:
    """The token a model emits to start answering `letter` right after the generation prompt.

    That is the first token of the bare letter, without a leading space: the generation prompt
    ends the assistant header (usually with a newline), so the answer starts a fresh line.

    Raises:
        ValueError: the letter encodes to no token.
    """
    ids = encode(tokenizer, letter)
    if not ids:
        raise ValueError(f"choice {letter!r} encodes to no token")
    return ids[0]


def build_choice_requests(
    samples: Sequence[MultipleChoiceSample], ctx: PromptContext
) -> list[ChoiceRequest]:
    """One request per question: the prompt and the token of each choice letter."""
    return [
        ChoiceRequest(
            prompt_ids=prompt_ids(ctx, s.question),
            choice_ids=tuple(letter_token_id(ctx.tokenizer, c) for c in s.choices),
        )
        for s in samples
    ]


def score_choices(
    samples: Sequence[MultipleChoiceSample], results: Sequence[ChoiceResult]
) -> float:
    """Fraction of questions whose most likely letter (first on ties) is not the answer."""
    correct = [
        s.choices[r.best] == s.answer for s, r in zip(samples, results, strict=True)
    ]
    return fraction_wrong(correct)


def run_generation(
    engine: Engine,
    samples: Sequence[MultipleChoiceSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of MULTIPLE_CHOICE: fraction incorrect."""
    check_samples(samples, MultipleChoiceSample, spec)
    results = engine.generate(build_generation_requests(samples, spec, ctx), progress)
    return score_generations(samples, results, ctx.tokenizer)


def run_loglik(
    engine: Engine,
    samples: Sequence[MultipleChoiceSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of MULTIPLE_CHOICE_LOGLIK: fraction incorrect."""
    check_samples(samples, MultipleChoiceSample, spec)
    results = engine.choice_logprobs(build_choice_requests(samples, ctx), progress)
    return score_choices(samples, results)
