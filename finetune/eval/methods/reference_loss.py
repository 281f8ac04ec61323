"""Reference loss: mean cross-entropy of the expected answer after the templated prompt."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from finetune.competition import EvalTaskSpec
from finetune.datasets.samples import ReferenceSample
from finetune.eval.methods.base import check_samples, loss_score
from finetune.eval.prompting import PromptContext, reference_fits, reference_ids, scored_bytes
from finetune.eval.requests import Engine, LossRequest, LossResult, ProgressCallback

logger = logging.getLogger(__name__)


def build_requests(samples: Sequence[ReferenceSample], ctx: PromptContext) -> list[LossRequest]:
    """One loss request per sample, scoring only the reference tokens.

    Ours: a sample marked `drop_if_longer` that does not fit the sequence length is left out;
    the others are cut to fit. The reference cuts and drops nothing here (its loaders filter
    by length). See `reference_ids`.

    Raises:
        ValueError: ours, a reference encodes to no tokens.
        EvalFailed: reference rules, a reference encodes to no tokens (the reference's handler
            of that error itself fails, so the whole model fails).
    """
    requests = []
    dropped = 0
    for s in samples:
        if (
            s.drop_if_longer
            and not ctx.reference
            and not reference_fits(ctx, s.prompt, s.reference, system=s.system)
        ):
            dropped += 1
            continue
        ids, score_from = reference_ids(ctx, s.prompt, s.reference, system=s.system)
        n_bytes = 0
        if ctx.rules.loss_unit == "byte":
            n_bytes = scored_bytes(ctx.tokenizer, s.reference, ids[score_from:])
        requests.append(LossRequest(token_ids=ids, score_from=score_from, n_bytes=n_bytes))
    if dropped:
        logger.info(
            "%d of %d samples dropped: longer than %d tokens",
            dropped,
            len(samples),
            ctx.sequence_length,
        )
    return requests


def score(
    results: Sequence[LossResult], requests: Sequence[LossRequest] = (), unit: str = "token"
) -> float:
    """Mean over samples of the per-sample mean CE, per token or per byte (`loss_score`).

    Raises:
        TaskFailed: a loss is not finite, or no sample is left (all longer than allowed).
    """
    return loss_score(results, requests, unit)


def run(
    engine: Engine,
    samples: Sequence[ReferenceSample],
    spec: EvalTaskSpec,
    ctx: PromptContext,
    progress: ProgressCallback | None = None,
) -> float:
    """Raw score of REFERENCE_LOSS.

    Raises:
        TaskFailed: see `score`.
    """
    check_samples(samples, ReferenceSample, spec)
    requests = build_requests(samples, ctx)
    return score(engine.loss(requests, progress), requests, ctx.rules.loss_unit)
