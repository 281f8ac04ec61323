"""What every eval method shares: its record in the registry and small scoring helpers.

A method is a pair of pure functions (samples -> requests, results -> raw score) joined by a
`run` function that asks the engine. Raw scores: lower is better, ``inf`` means failed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from finetune.competition import EvalTaskSpec, GenerationSpec
from finetune.datasets.samples import Sample
from finetune.errors import ConfigError
from finetune.eval.prompting import PromptContext
from finetune.eval.requests import Engine, GenerationRequest, LossResult, ProgressCallback

RunMethod = Callable[
    [Engine, Sequence[Sample], EvalTaskSpec, PromptContext, ProgressCallback | None], float
]


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
    """Mean over samples of each sample's mean loss; ``inf`` if any is not finite or none."""
    if not results:
        return math.inf
    means = [r.mean for r in results]
    if not all(math.isfinite(m) for m in means):
        return math.inf
    return sum(means) / len(means)


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
