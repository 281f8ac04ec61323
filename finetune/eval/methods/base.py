"""What every eval method shares: its record in the registry and small scoring helpers.

A method is a pair of pure functions (samples -> requests, results -> raw score) joined by a
`run` function that asks the engine. Raw scores: lower is better. A task that gives no score
raises `TaskFailed` with the reason; `evaluate_model` records it as a raw ``inf`` with that
reason beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from finetune.competition import EvalTaskSpec, GenerationSpec
from finetune.datasets.samples import Sample
from finetune.errors import ConfigError, FinetuneError
from finetune.eval.prompting import PromptContext
from finetune.eval.requests import (
    Engine,
    GenerationRequest,
    LossRequest,
    LossResult,
    ProgressCallback,
)

RunMethod = Callable[
    [Engine, Sequence[Sample], EvalTaskSpec, PromptContext, ProgressCallback | None], float
]


class TaskFailed(FinetuneError, RuntimeError):
    """A task gave no score for this model. The message is the reason the validator shows
    and records, ``"code: detail"`` (``"degenerate: 12 of 20 gate positions agree"``).

    It never leaves `evaluate_model`, which turns it into a raw ``inf`` and the task's
    `failure` (no reason code: it is never recorded as a model's failure by itself); so it
    lives beside the methods rather than in `finetune.errors`.
    """


@dataclass(frozen=True)
class EvalMethod:
    """One registered method.

    Attributes:
        run: ``run(engine, samples, spec, ctx, progress) -> raw``.
        sample_type: the sample record the method consumes.
        work: engine requests needed for `n` samples (sizes the progress bar).
    """

    run: RunMethod
    sample_type: type
    work: Callable[[int], int] = lambda n: n


def generation_of(spec: EvalTaskSpec) -> GenerationSpec:
    """The task's generation settings.

    Raises:
        ConfigError: the task defines none.
    """
    if spec.generation is None:
        raise ConfigError(f"task {spec.name} ({spec.method.value}) needs generation settings")
    return spec.generation


def generation_request(
    prompt: Sequence[int], generation: GenerationSpec, ctx: PromptContext
) -> GenerationRequest:
    """Greedy request for `prompt` with the task's limits, stopping at the context's stop ids."""
    return GenerationRequest(
        prompt_ids=tuple(prompt),
        max_new_tokens=generation.max_new_tokens,
        repetition_penalty=generation.repetition_penalty,
        stop_ids=ctx.stop_ids,
    )


def mean_of_means(results: Sequence[LossResult]) -> float:
    """Mean over samples of each sample's mean loss.

    Raises:
        TaskFailed: no result (every sample was left out), or a loss that is NaN or inf.
    """
    if not results:
        raise TaskFailed("no_samples: no sample left to score")
    means = [r.mean for r in results]
    bad = sum(not math.isfinite(m) for m in means)
    if bad:
        raise TaskFailed(f"non_finite_loss: the loss is NaN or inf on {bad} of {len(means)} samples")
    return sum(means) / len(means)


def loss_score(results: Sequence[LossResult], requests: Sequence[LossRequest], unit: str) -> float:
    """A loss task's raw score in the protocol's unit (`EvalRules.loss_unit`).

    ``token``: `mean_of_means` (nats per token). ``byte``: the mean over samples of each
    sample's bits per UTF-8 byte of its scored text (``sum_nll / (ln 2 * n_bytes)``); a scored
    text of no bytes (a document of special tokens only) counts one byte.

    Raises:
        TaskFailed: as `mean_of_means`.
    """
    if unit == "token":
        return mean_of_means(results)
    if unit != "byte":
        raise ConfigError(f"unknown loss unit {unit!r}")
    bits = [
        LossResult(sum_nll=r.sum_nll / math.log(2), n_tokens=max(1, q.n_bytes))
        for r, q in zip(results, requests, strict=True)
    ]
    return mean_of_means(bits)


def fraction_wrong(correct: Sequence[bool]) -> float:
    """Fraction of False in `correct` (1.0 for no samples: nothing was shown right)."""
    if not correct:
        return 1.0
    return 1.0 - sum(correct) / len(correct)


def check_samples(samples: Sequence[Sample], sample_type: type, spec: EvalTaskSpec) -> None:
    """Raises ConfigError when the loader gave records the method cannot read."""
    wrong = {type(s).__name__ for s in samples if not isinstance(s, sample_type)}
    if wrong:
        raise ConfigError(
            f"task {spec.name} ({spec.method.value}) needs {sample_type.__name__} samples, "
            f"got {sorted(wrong)}"
        )
