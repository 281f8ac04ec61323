"""Text loss (FINEWEB): mean next-token cross-entropy over documents, behind a degeneracy gate.

The gate catches a model that ignores its input or repeats itself, which a loss alone can
reward: it greedily continues two prompts for exactly 20 tokens (the task's `generation` may
set another length) and fails the model if the continuations agree at half the positions or
more, or if both are dominated by one token (more than half).

Ours continues two unrelated fixed prompts, never stopping early. The reference
(`EvalRules.prompting`) continues the first two documents as tokenised for the loss (padded,
under its rules), with the model's own repetition penalty and its EOS ids banned, as
`generate(min_new_tokens=20)` does with the model's generation config.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from finetune.competition import EvalTaskSpec, GenerationSpec
from finetune.datasets.samples import TextSample
from finetune.eval.methods.base import check_samples, mean_of_means
from finetune.eval.prompting import PromptContext, document_ids, prompt_ids
from finetune.eval.requests import (
    Engine,
    GenerationRequest,
    GenerationResult,
    LossRequest,
    LossResult,
    ProgressCallback,
)

GATE_PROMPTS = (
    "Describe the water cycle in a few sentences.",
    "List three uses of a lighthouse and say why each matters.",
)
# The reference's gate length; a task's generation settings may set another.
GATE_GENERATION = GenerationSpec(max_new_tokens=20)


def gate_requests(
    ctx: PromptContext,
    generation: GenerationSpec = GATE_GENERATION,
    documents: Sequence[Sequence[int]] = (),
) -> list[GenerationRequest]:
    """The two gate generations (`max_new_tokens` each, never stopped early).

    Ours: the two fixed prompts. Reference rules: the first two of `documents`.

    Raises:
        ValueError: reference rules and fewer than two documents.
    """
    if ctx.reference:
        if len(documents) < 2:
            raise ValueError("the reference's gate needs two documents")
        return [
            GenerationRequest(
                prompt_ids=tuple(doc),
                max_new_tokens=generation.max_new_tokens,
                repetition_penalty=ctx.model_repetition_penalty,
                suppress_ids=ctx.model_eos_ids,
            )
            for doc in documents[:2]
        ]
    return [
        GenerationRequest(
            prompt_ids=prompt_ids(ctx, text, reserve=generation.max_new_tokens),
            max_new_tokens=generation.max_new_tokens,
            repetition_penalty=generation.repetition_penalty,
        )
        for text in GATE_PROMPTS
    ]


def is_degenerate(first: Sequence[int], second: Sequence[int], *, length: int = 20) -> bool:
    """Whether two gate continuations of `length` tokens show a broken model.

    Half the length is the limit both ways: unrelated prompts should not share that many
    positions, and a token filling more than half of a continuation is a repetition loop.
    With the reference's 20 tokens: >= 10 identical positions, or a token > 10 times in both.
    """
    half = length // 2
    same = sum(a == b for a, b in zip(first, second, strict=False))
    if same >= half:
        return True

    def repetitive(ids: Sequence[int]) -> bool:
        return bool(ids) and max(Counter(ids).values()) > half

    return repetitive(first) and repetitive(second)


def passes_gate(results: Sequence[GenerationResult], *, length: int = 20) -> bool:
    """Whether the gate's two continuations look like a working model."""
    first, second = results
    return not is_degenerate(first.token_ids, second.token_ids, length=length)


def loss_requests(documents: Sequence[Sequence[int]]) -> list[LossRequest]:
    """One request per document of at least two tokens, scored from its second token."""
    # A single token has nothing to be predicted from.
    return [LossRequest(token_ids=tuple(ids), score_from=1) for ids in documents if len(ids) >= 2]


def build_requests(samples: Sequence[TextSample], ctx: PromptContext) -> list[LossRequest]:
    """The loss requests of `samples`, tokenised by `document_ids` (padded under the rules)."""
    return loss_requests([document_ids(ctx, s.text) for s in samples])


def score(results: Sequence[LossResult]) -> float:
    """Mean of the per-document mean CE (``inf`` if any is not finite, or no document)."""
    return mean_of_means(results)


def score_documents(
    engine: Engine,
    documents: Sequence[Sequence[int]],
    generation: GenerationSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Gate, then loss, on tokenised documents; ``inf`` if the gate fails (or, under the
    reference's rules, there are fewer than two documents for it)."""
    if ctx.reference and len(documents) < 2:
        return float("inf")
    gate = engine.generate(gate_requests(ctx, generation, documents), progress)
    if not passes_gate(gate, length=generation.max_new_tokens):
        return float("inf")
    return score(engine.loss(loss_requests(documents), progress))


def run(
    engine: Engine,
    samples: Sequence[TextSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of TEXT_LOSS; ``inf`` without computing the loss if the gate fails."""
    check_samples(samples, TextSample, spec)
    documents = [document_ids(ctx, s.text) for s in samples]
    return score_documents(engine, documents, spec.generation or GATE_GENERATION, ctx, progress)
