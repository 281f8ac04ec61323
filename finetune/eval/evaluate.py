"""Score one model on a competition's tasks: the one code path for validator, miner and CLI.

`prepare_task_data` loads every task's samples once per round (the same for every model);
`evaluate_model` runs each task's method through an engine and combines the raw scores as
SPEC §5 says (with `finetune.scoring`): weight x normalise(raw), weights rescaled over the
tasks that have data.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.competition import Competition, EvalTaskSpec
from finetune.datasets import DataConfig, Sample, load_task_samples
from finetune.errors import DataUnavailable, EvalFailed
from finetune.eval.loading import load_model
from finetune.eval.methods import TaskFailed, get_method
from finetune.eval.naive import NaiveEngine
from finetune.eval.prompting import PromptContext, prompt_context
from finetune.eval.requests import Engine
from finetune.eval.round_trip import loss_texts, round_trip_failure
from finetune.protocol import NEXT, DataRules, EvalRules
from finetune.scoring import aggregate_score, effective_weights, normalised_scores

logger = logging.getLogger(__name__)

# Called as (task name, requests completed so far, requests in the task).
TaskProgress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TaskData:
    """A round's samples per task name, and the tasks dropped with the reason why."""

    seed: int
    samples: Mapping[str, tuple[Sample, ...]] = field(default_factory=dict)
    dropped: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskScore:
    """One task's result. `weighted` uses the weight rescaled over the tasks not dropped.

    `failure` says why the task gave no score (``"degenerate: 12 of 20 gate positions
    agree"``; the part before the colon is a short code), "" when it scored. A failed task
    has raw ``inf``; what that does to the total depends on its normalisation (see
    `finetune.scoring.aggregate_score`).
    """

    raw: float
    normalized: float
    weighted: float
    samples: int
    version: int
    failure: str = ""

    def to_json(self) -> dict[str, float | int | str]:
        return {
            "raw": self.raw,
            "normalized": self.normalized,
            "weighted": self.weighted,
            "samples": self.samples,
            "version": self.version,
            "failure": self.failure,
        }


@dataclass(frozen=True)
class ModelEvaluation:
    """A model's scores on a competition. `total` is lower-is-better; ``inf`` = failed.

    `timings` (seconds; not part of `to_json`, the worker reports them): ``load_s`` (model
    and tokenizer), ``tokenize_s`` (building every task's requests: templates, tokenising,
    and the scoring of results), ``score_s`` (the engine's calls) and ``total_s``.
    """

    competition: str
    seed: int
    tasks: Mapping[str, TaskScore]
    total: float
    dropped: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict, compare=False)

    def to_json(self) -> dict[str, Any]:
        """Plain data for a JSON file. Non-finite scores stay floats (``Infinity`` in JSON)."""
        return {
            "competition": self.competition,
            "seed": self.seed,
            "tasks": {name: score.to_json() for name, score in self.tasks.items()},
            "total": self.total,
            "dropped": dict(self.dropped),
        }


def prepare_task_data(
    competition: Competition,
    *,
    seed: int,
    config: DataConfig,
    sample_counts: Mapping[str, int] | None = None,
    rules: DataRules = NEXT.data,
) -> TaskData:
    """Load each task's samples for a round.

    Args:
        competition: whose tasks to load.
        seed: the round's seed (SPEC §6); every loader derives its own RNG from it.
        config: data sources (offline, local files, HTTP settings).
        sample_counts: per task name, how many samples to draw instead of the task's count
            (a local check with few samples). The task's `min_samples` is capped to it.
        rules: how the loaders draw rows (the protocol's `data`); defaults to `next`'s.

    Returns:
        The samples of every task that has enough, and the others in `dropped` with the reason.
    """
    counts = sample_counts or {}
    samples: dict[str, tuple[Sample, ...]] = {}
    dropped: dict[str, str] = {}
    for task in competition.tasks:
        count = counts.get(task.name, task.samples)
        try:
            loaded = load_task_samples(
                task.dataset,
                seed=seed,
                count=count,
                options=task.dataset_options,
                config=config,
                rules=rules,
            )
        except DataUnavailable as e:
            logger.warning("task %s dropped: %s", task.name, e)
            dropped[task.name] = f"{e.reason}: {e}"
            continue
        needed = min(task.min_samples, count)
        if len(loaded) < needed:
            dropped[task.name] = f"too_few_samples: {len(loaded)} < {needed}"
            logger.warning("task %s dropped: %s", task.name, dropped[task.name])
            continue
        samples[task.name] = tuple(loaded)
    return TaskData(seed=seed, samples=samples, dropped=dropped)


def default_engine(
    model: Any, *, device: str, batch_tokens: int, loss_in_model_dtype: bool = False
) -> Engine:
    """The batched engine where it is available, else the naive one.

    `loss_in_model_dtype`: losses from logits in the model's dtype (`EvalRules`).
    """
    try:
        from finetune.eval.engine import BatchedEngine
    except ImportError:  # the batched engine is optional; the naive one is always right
        logger.info("batched engine unavailable; using the naive engine")
        return NaiveEngine(model, device=device, loss_in_model_dtype=loss_in_model_dtype)
    return BatchedEngine(
        model, device=device, batch_tokens=batch_tokens, loss_in_model_dtype=loss_in_model_dtype
    )


def _load(
    model_or_dir: str | os.PathLike[str] | tuple[Any, Any],
    competition: Competition,
    device: str,
    tokenizer_dir: str | os.PathLike[str] | None,
) -> tuple[Any, Any]:
    if isinstance(model_or_dir, (str, os.PathLike)):
        return load_model(
            Path(model_or_dir),
            device=device,
            dtype=competition.constraints.load_dtype,
            tokenizer=competition.constraints.tokenizer,
            tokenizer_dir=tokenizer_dir,
        )
    return model_or_dir


def evaluate_model(
    model_or_dir: str | os.PathLike[str] | tuple[Any, Any],
    competition: Competition,
    task_data: TaskData,
    *,
    device: str = "cpu",
    batch_tokens: int = 8192,
    engine: Engine | None = None,
    progress: bool | TaskProgress = False,
    rules: EvalRules = NEXT.eval,
    tokenizer_dir: str | os.PathLike[str] | None = None,
) -> ModelEvaluation:
    """Score a model on every task of `competition` that has data.

    Args:
        model_or_dir: a model directory (loaded with the competition's dtype and tokenizer), or
            a loaded ``(model, tokenizer)`` pair.
        competition: the tasks, weights, normalisation and sequence length.
        task_data: the round's samples (`prepare_task_data`).
        device: where the model runs.
        batch_tokens: token budget per batch of the default engine.
        engine: answers the requests; by default the batched engine on the model (computing
            losses in the model's dtype when `rules` say so; a given engine is used as is).
        progress: True for a rich progress bar per task, or a callback
            ``(task, completed, total)``; False for silence.
        rules: the protocol's eval rules (`finetune.protocol`); default `NEXT`'s.
        tokenizer_dir: where the competition's fixed tokenizer is cached (offline it must
            hold it); default: the environment variable ``FINETUNE_FIXED_TOKENIZER_DIR``,
            else the Hugging Face cache.

    Returns:
        Per-task scores, the total and the dropped tasks, combined by `finetune.scoring`
        (the validator's maths). A failed task has raw ``inf`` (NaN is reported as ``inf``)
        and its reason in `TaskScore.failure`; see `finetune.scoring.aggregate_score` for how
        a failure and "no task left" count.

    Raises:
        ModelRejected: the directory cannot be loaded as a causal LM (see `load_model`).
        ConfigError: the fixed tokenizer is missing and cannot be downloaded.
        EvalFailed: under the reference's rules, what fails the whole model there (a
            tokenizer without chat template, a reference of no tokens); under rules that
            check it, a tokenizer of the model's own that changes a loss task's text
            (reason ``tokenizer_round_trip``, see `finetune.eval.round_trip`).
    """
    started = time.perf_counter()
    model, tokenizer = _load(model_or_dir, competition, device, tokenizer_dir)
    loaded = time.perf_counter()
    if engine is None:
        engine = default_engine(
            model, device=device, batch_tokens=batch_tokens,
            loss_in_model_dtype=rules.loss_in_model_dtype,
        )
    engine = _TimedEngine(engine)
    ctx = prompt_context(
        tokenizer,
        competition.constraints.sequence_length,
        rules=rules,
        generation_config=getattr(model, "generation_config", None),
    )
    dropped = dict(task_data.dropped)
    for task in competition.tasks:
        if task.name not in dropped and not task_data.samples.get(task.name):
            dropped[task.name] = "no_samples"
    if rules.tokenizer_round_trip and competition.constraints.tokenizer is None:
        kept = {name: rows for name, rows in task_data.samples.items() if name not in dropped}
        failure = round_trip_failure(tokenizer, loss_texts(competition, kept))
        if failure:
            raise EvalFailed(f"the model's tokenizer changes the text: {failure}",
                             reason="tokenizer_round_trip")
    raws: dict[str, float] = {}
    failures: dict[str, str] = {}
    with _progress(progress) as report:
        for task in competition.tasks:
            if task.name not in dropped:
                raws[task.name], failures[task.name] = _run_task(
                    engine, task, task_data.samples[task.name], ctx, report
                )
    # The same maths as the validator's: weights rescaled over the tasks kept (SPEC §5).
    weights = effective_weights(competition.tasks, dropped)
    normalized = normalised_scores(raws, competition.tasks, dropped)
    scores = {
        name: TaskScore(
            raw=raw,
            normalized=normalized[name],
            weighted=weights[name] * normalized[name],
            samples=len(task_data.samples[name]),
            version=competition.task(name).version,
            failure=failures[name],
        )
        for name, raw in raws.items()
    }
    done = time.perf_counter()
    return ModelEvaluation(
        competition=competition.name,
        seed=task_data.seed,
        tasks=scores,
        total=aggregate_score(raws, competition.tasks, dropped),
        dropped=dropped,
        timings={
            "load_s": loaded - started,
            "tokenize_s": done - loaded - engine.seconds,
            "score_s": engine.seconds,
            "total_s": done - started,
        },
    )


class _TimedEngine:
    """The engine, with the seconds spent in its calls added up (the scoring time)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seconds = 0.0

    def _timed(self, name: str, requests: Sequence[Any], progress: Any) -> list:
        start = time.perf_counter()
        try:
            return getattr(self.engine, name)(requests, progress)
        finally:
            self.seconds += time.perf_counter() - start

    def loss(self, requests, progress=None):  # noqa: D102 - the Engine protocol
        return self._timed("loss", requests, progress)

    def generate(self, requests, progress=None):  # noqa: D102
        return self._timed("generate", requests, progress)

    def choice_logprobs(self, requests, progress=None):  # noqa: D102
        return self._timed("choice_logprobs", requests, progress)


def _run_task(
    engine: Engine,
    task: EvalTaskSpec,
    samples: Sequence[Sample],
    ctx: PromptContext,
    report: TaskProgress | None,
) -> tuple[float, str]:
    """The task's raw score and, when it gave none, why (raw ``inf``)."""
    method = get_method(task.method)
    total = method.work(len(samples))
    done = 0

    def advance(n: int) -> None:
        nonlocal done
        done += n
        if report:
            report(task.name, done, total)

    if report:
        report(task.name, 0, total)
    try:
        raw = method.run(engine, samples, task, ctx, advance)
    except TaskFailed as failed:
        logger.info("task %s failed on %d samples: %s", task.name, len(samples), failed)
        return math.inf, str(failed)
    logger.info("task %s: raw %.6g on %d samples", task.name, raw, len(samples))
    # No method returns these (they raise TaskFailed); should one, it still says so.
    if math.isnan(raw):
        return math.inf, "nan: the score is NaN"
    return raw, "" if math.isfinite(raw) else f"non_finite: the score is {raw}"


@contextmanager
def _progress(progress: bool | TaskProgress):
    """Yields a TaskProgress callback (or None): a rich bar per task when `progress` is True."""
    if progress is False or progress is None:
        yield None
        return
    if callable(progress):
        yield progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:

        def report(name: str, completed: int, total: int) -> None:
            if name not in bars:
                bars[name] = bar.add_task(name, total=total)
            bar.update(bars[name], completed=min(completed, total))

        yield report


__all__ = [
    "ModelEvaluation",
    "TaskData",
    "TaskProgress",
    "TaskScore",
    "default_engine",
    "evaluate_model",
    "prepare_task_data",
]
