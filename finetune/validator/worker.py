"""Score one model in an isolated process with a hard deadline and a memory limit.

A miner's model can crash the interpreter, exhaust memory, produce NaN or simply take too long.
None of that may stop the validator: the model is scored in a child process (see `isolation`)
that is killed at its deadline or when it outgrows its memory budget, and every failure
becomes a finite record with an infinite score and a reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.validator.isolation import ChildOutcome, run_in_child

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerOutcome:
    """What came back from one scoring process."""

    ok: bool
    total: float  # inf on any failure
    tasks: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> raw/normalized/weighted/samples
    dropped: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # failure code: timeout, crashed, nan, non_finite, out_of_memory, aborted, ...
    detail: str = ""
    elapsed_s: float = 0.0
    peak_rss_bytes: int = 0


def _default_job(model_dir: str, competition: Any, task_data: Any, options: dict) -> dict:
    from finetune.eval import evaluate_model

    evaluation = evaluate_model(Path(model_dir), competition, task_data, **options)
    return evaluation.to_json()


def _outcome_from_result(result: dict, elapsed: float, peak: int) -> WorkerOutcome:
    total = float(result.get("total", math.inf))
    tasks = {name: dict(values) for name, values in result.get("tasks", {}).items()}
    dropped = dict(result.get("dropped", {}))

    def failed(reason: str, detail: str) -> WorkerOutcome:
        return WorkerOutcome(False, math.inf, tasks, dropped, reason, detail, elapsed, peak)

    if total < 0:
        # Losses and error rates are never negative; a negative total would invert every win.
        return failed("negative_score", f"score {total} is negative")
    if math.isnan(total):
        return failed("nan", "score is NaN")
    if not math.isfinite(total):
        # evaluate_model reports a NaN task loss as inf; without a reason the miner would
        # only see an infinite score.
        bad = sorted(name for name, values in tasks.items() if not math.isfinite(values.get("raw", math.inf)))
        return failed("non_finite", f"no finite score on {', '.join(bad)}" if bad else "no task left to score")
    return WorkerOutcome(True, total, tasks, dropped, elapsed_s=elapsed, peak_rss_bytes=peak)


def _outcome(child: ChildOutcome, deadline_s: float) -> WorkerOutcome:
    if child.status == "ok":
        return _outcome_from_result(child.value, child.elapsed_s, child.peak_rss_bytes)
    reason = child.reason if child.status == "error" else child.status
    if child.status == "unavailable":
        reason = "worker_unavailable"  # the validator's own failure: never counted against the model
    detail = child.detail
    if child.status == "crashed":
        detail = detail.replace("child exit code", "worker exit code")
    elapsed = deadline_s if child.status == "timeout" else child.elapsed_s
    return WorkerOutcome(False, math.inf, reason=reason, detail=detail, elapsed_s=elapsed,
                         peak_rss_bytes=child.peak_rss_bytes)


def run_isolated(
    model_dir: str | Path,
    competition: Any,
    task_data: Any,
    *,
    deadline_s: float,
    options: dict | None = None,
    job: Callable[..., dict] | None = None,
    should_abort: Callable[[], bool] | None = None,
    memory_bytes: int | None = None,
) -> WorkerOutcome:
    """Score `model_dir` in a child process, killed after `deadline_s` seconds.

    Args:
        model_dir: the downloaded, checked model.
        competition: the `Competition` record to score it for.
        task_data: the round's prepared samples (the same for every model of the round).
        deadline_s: hard wall-clock limit, model loading included.
        options: keyword options for `evaluate_model` (device, batch_tokens).
        job: the function run in the child (tests substitute one); it must be importable
            by the child, i.e. a module-level function.
        should_abort: polled while waiting; True kills the child (shutdown requested).
        memory_bytes: host memory the child may allocate (None: no limit); beyond it the
            model fails with ``out_of_memory``.

    Returns:
        A `WorkerOutcome`; never raises for anything the model does.
    """
    args = (str(model_dir), competition, task_data, options or {})
    child = run_in_child(job or _default_job, args, deadline_s=deadline_s, memory_bytes=memory_bytes,
                         should_abort=should_abort)
    if child.status == "unavailable":
        logger.warning("scoring worker did not start: %s", child.detail)
    return _outcome(child, deadline_s)


__all__ = ["WorkerOutcome", "run_isolated"]
