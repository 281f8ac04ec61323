"""IF-eval: answers to two questions under shared rules, scored by the rules they break.

Each response with ``c`` of ``n`` rules satisfied scores ``1 - (c / n) ** 2`` and counts ``n``
times, so samples with more rules weigh more. A model that gives (nearly) the same answer to
both questions of too many samples ignores the question and gets the worst score, 1.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from finetune.competition import EvalTaskSpec
from finetune.datasets.ifeval import build_ifeval_prompt
from finetune.datasets.samples import IfEvalSample
from finetune.eval.ifeval_rules import count_satisfied
from finetune.eval.methods.base import check_samples, generation_of, generation_request
from finetune.eval.prompting import PromptContext, Tokenizer, decode, prompt_ids
from finetune.eval.requests import Engine, GenerationRequest, GenerationResult, ProgressCallback

DUPLICATE_RATIO = 0.6  # difflib ratio above which two responses are near-duplicates
MAX_DUPLICATE_FRACTION = 0.1  # more samples than this with near-duplicates -> raw = 1


def build_requests(
    samples: Sequence[IfEvalSample], spec: EvalTaskSpec, ctx: PromptContext
) -> list[GenerationRequest]:
    """Two requests per sample, in order: (sample 0, q0), (sample 0, q1), (sample 1, q0), ..."""
    generation = generation_of(spec)
    return [
        generation_request(
            prompt_ids(
                ctx, build_ifeval_prompt(q, s.rules), reserve=generation.max_new_tokens
            ),
            generation,
            ctx,
        )
        for s in samples
        for q in s.questions
    ]


def response_score(satisfied: int, n_rules: int) -> float:
    """``1 - (c / n) ** 2``: 0 when every rule holds, 1 when none does."""
    return 1.0 - (satisfied / n_rules) ** 2


def near_duplicates(first: str, second: str) -> bool:
    """difflib ratio, whitespace as junk, above 0.6."""
    matcher = difflib.SequenceMatcher(lambda ch: ch.isspace(), first, second)
    return matcher.ratio() > DUPLICATE_RATIO


def score_responses(
    samples: Sequence[IfEvalSample], responses: Sequence[tuple[str, str]]
) -> float:
    """Raw IF-eval score of decoded responses, one pair per sample (lower is better)."""
    if not samples:
        return 1.0
    duplicated = sum(near_duplicates(a, b) for a, b in responses)
    if duplicated > MAX_DUPLICATE_FRACTION * len(samples):
        return 1.0
    total = weight = 0.0
    for sample, pair in zip(samples, responses, strict=True):
        n = len(sample.rules)
        if n == 0:
            continue
        for response in pair:
            total += n * response_score(count_satisfied(sample.rules, response), n)
            weight += n
    return total / weight if weight else 1.0


def decode_pairs(
    results: Sequence[GenerationResult], tokenizer: Tokenizer
) -> list[tuple[str, str]]:
    """Flat results (two per sample) back to one decoded pair per sample."""
    texts = [decode(tokenizer, r.token_ids) for r in results]
    return list(zip(texts[0::2], texts[1::2], strict=True))


def run(
    engine: Engine,
    samples: Sequence[IfEvalSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of IF_EVAL."""
    check_samples(samples, IfEvalSample, spec)
    results = engine.generate(build_requests(samples, spec, ctx), progress)
    return score_responses(samples, decode_pairs(results, ctx.tokenizer))
