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
from finetune.eval.methods.base import TaskFailed, check_samples, loss_score
from finetune.eval.prompting import PromptContext, document_ids, prompt_ids, scored_bytes
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


def degeneracy(first: Sequence[int], second: Sequence[int], *, length: int = 20) -> str:
    """Why two gate continuations of `length` tokens show a broken model ("" if they do not).

    Half the length is the limit both ways: unrelated prompts should not share that many
    positions, and a token filling more than half of a continuation is a repetition loop.
    With the reference's 20 tokens: >= 10 identical positions, or a token > 10 times in both.
    """
    half = length // 2
    same = sum(a == b for a, b in zip(first, second, strict=False))
    if same >= half:
        return f"degenerate: {same} of {length} gate positions agree"

    def most_repeated(ids: Sequence[int]) -> int:
        return max(Counter(ids).values(), default=0)

    repeats = most_repeated(first), most_repeated(second)
    if min(repeats) > half:
        return (f"degenerate: one token fills {repeats[0]} and {repeats[1]} of the {length} "
                "positions of the two gate continuations")
    return ""


def is_degenerate(first: Sequence[int], second: Sequence[int], *, length: int = 20) -> bool:
    """Whether two gate continuations of `length` tokens show a broken model (`degeneracy`)."""
    return bool(degeneracy(first, second, length=length))


def gate_failure(results: Sequence[GenerationResult], *, length: int = 20) -> str:
    """Why the gate's two continuations fail it ("" if they look like a working model)."""
    first, second = results
    return degeneracy(first.token_ids, second.token_ids, length=length)


def passes_gate(results: Sequence[GenerationResult], *, length: int = 20) -> bool:
    """Whether the gate's two continuations look like a working model."""
    return not gate_failure(results, length=length)


def loss_requests(
    documents: Sequence[Sequence[int]], n_bytes: Sequence[int] | None = None
) -> list[LossRequest]:
    """One request per document of at least two tokens, scored from its second token.

    `n_bytes`: each document's scored bytes (`document_bytes`), for a loss per byte.
    """
    counts = n_bytes if n_bytes is not None else [0] * len(documents)
    # A single token has nothing to be predicted from.
    return [
        LossRequest(token_ids=tuple(ids), score_from=1, n_bytes=count)
        for ids, count in zip(documents, counts, strict=True)
        if len(ids) >= 2
    ]


def document_bytes(ctx: PromptContext, texts: Sequence[str], documents: Sequence[Sequence[int]]) -> list[int]:
    """The UTF-8 bytes each document's scored tokens (all but its first) stand for."""
    return [
        scored_bytes(ctx.tokenizer, text, ids, unscored=1)
        for text, ids in zip(texts, documents, strict=True)
    ]


def build_requests(samples: Sequence[TextSample], ctx: PromptContext) -> list[LossRequest]:
    """The loss requests of `samples`, tokenised by `document_ids` (padded under the rules)."""
    documents = [document_ids(ctx, s.text) for s in samples]
    n_bytes = None
    if ctx.rules.loss_unit == "byte":
        n_bytes = document_bytes(ctx, [s.text for s in samples], documents)
    return loss_requests(documents, n_bytes)


def score(
    results: Sequence[LossResult], requests: Sequence[LossRequest] = (), unit: str = "token"
) -> float:
    """Mean of the per-document mean CE, per token or per byte (`loss_score`).

    Raises:
        TaskFailed: a loss is not finite, or there is no document.
    """
    return loss_score(results, requests, unit)


def score_documents(
    engine: Engine,
    documents: Sequence[Sequence[int]],
    generation: GenerationSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
    n_bytes: Sequence[int] | None = None,
) -> float:
    """Gate, then loss, on tokenised documents (`n_bytes`: their scored bytes, required when
    the rules count the loss per byte).

    Raises:
        TaskFailed: the gate fails (``degenerate: ...``), or, under the reference's rules,
            there are fewer than two documents for it; a loss is not finite.
    """
    if ctx.reference and len(documents) < 2:
        raise TaskFailed(f"too_few_documents: the gate needs two documents, got {len(documents)}")
    gate = engine.generate(gate_requests(ctx, generation, documents), progress)
    failure = gate_failure(gate, length=generation.max_new_tokens)
    if failure:
        raise TaskFailed(failure)
    if ctx.rules.loss_unit == "byte" and n_bytes is None:
        raise ValueError("a loss per byte needs each document's scored bytes")
    requests = loss_requests(documents, n_bytes)
    return score(engine.loss(requests, progress), requests, ctx.rules.loss_unit)


def run(
    engine: Engine,
    samples: Sequence[TextSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of TEXT_LOSS.

    Raises:
        TaskFailed: the gate fails (the loss is then not computed); see `score_documents`.
    """
    check_samples(samples, TextSample, spec)
    documents = [document_ids(ctx, s.text) for s in samples]
    n_bytes = None
    if ctx.rules.loss_unit == "byte":
        n_bytes = document_bytes(ctx, [s.text for s in samples], documents)
    return score_documents(
        engine, documents, spec.generation or GATE_GENERATION, ctx, progress, n_bytes
    )
