"""Score one model in an isolated process with a hard deadline and a memory limit.

A miner's model can crash the interpreter, exhaust memory, produce NaN or simply take too long.
None of that may stop the validator: the model is scored in a child process (see `isolation`)
that is killed at its deadline or when it outgrows its memory budget, and every failure
becomes a finite record with an infinite score and a reason.
"""

from __future__ import annotations

import logging
import math
import sys
import time
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
    # name -> raw/normalized/weighted/samples, and "failure": why a task gave no score ("" if it did)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # failure code: timeout, crashed, nan, non_finite, out_of_memory, aborted, ...
    detail: str = ""
    elapsed_s: float = 0.0
    peak_rss_bytes: int = 0


# A long task logs a progress line at most this often (besides its start and its end).
PROGRESS_EVERY_S = 10.0


class ProgressLog:
    """A `TaskProgress` callback that logs a model's scoring: each task's start and end, and
    in between at most one line every `every_s` seconds per task.

    Counts are the method's engine requests (a sample of IF-eval is two, FINEWEB adds its two
    gate generations). A task can end short of its total (a failed gate skips the losses), so
    a task's end is logged when the next task starts, or at `close`.
    """

    def __init__(self, label: str, *, every_s: float = PROGRESS_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.every_s = every_s
        self._clock = clock
        self._task = ""
        self._done = self._total = 0
        self._started = self._logged = 0.0

    def __call__(self, task: str, completed: int, total: int) -> None:
        now = self._clock()
        if task != self._task:
            self.close()
            self._task, self._started, self._logged = task, now, now
            logger.info("%s: %s started, %d requests", self.label, task, total)
        self._done, self._total = min(completed, total), total
        if now - self._logged >= self.every_s and self._done < total:
            self._logged = now
            logger.info("%s: %s %d/%d requests, %.0f s", self.label, task, self._done, total, now - self._started)

    def close(self, ending: str = "done") -> None:
        """Log the end of the task in progress, if any (`ending`: ``done``, or ``stopped``
        when the scoring raised)."""
        if self._task:
            logger.info("%s: %s %s, %d/%d requests in %.0f s", self.label, self._task, ending, self._done,
                        self._total, self._clock() - self._started)
            self._task = ""


def _configure_child_logging() -> None:
    """The scoring child starts from the fork server, without the daemon's logging: its own
    lines go to stderr (which it shares with the daemon), library noise stays off."""
    from finetune.eval.loading import quiet_library_output

    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)-8s %(message)s", "%x %X"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
        logger.setLevel(logging.INFO)
    quiet_library_output()


def _folder_label(model_dir: str) -> str:
    """The model as the cache folder ``<hotkey>/<revision>`` names it: ``5DXc4Xfh@b44384cc``."""
    path = Path(model_dir)
    return f"{path.parent.name[:8]}@{path.name[:8]}"


def _default_job(model_dir: str, competition: Any, task_data: Any, options: dict) -> dict:
    started_at = time.time()  # wall clock, comparable with the parent's: the worker's start-up
    _configure_child_logging()
    from finetune.eval import evaluate_model

    options = dict(options)
    progress = ProgressLog(str(options.pop("label", "") or _folder_label(model_dir)))
    try:
        evaluation = evaluate_model(Path(model_dir), competition, task_data, progress=progress, **options)
    except BaseException:
        progress.close("stopped")
        raise
    progress.close()
    # Phases of the job (load, tokenize, score) and when it began and ended: the parent
    # derives the worker's start and the result's transfer from them.
    timings = {**evaluation.timings, "job_started_at": started_at, "job_finished_at": time.time()}
    return {**evaluation.to_json(), "timings": timings}


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
        # Without a reason the miner would only see an infinite score: name the tasks, and
        # why each gave no score (evaluate_model reports a NaN task loss as inf too).
        bad = [f"{name} ({values['failure']})" if values.get("failure") else name
               for name, values in sorted(tasks.items()) if not math.isfinite(values.get("raw", math.inf))]
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
        options: keyword options for `evaluate_model` (device, batch_tokens), and ``label``:
            how the child's progress lines name the model (``"uid 3"``; default: from
            `model_dir`).
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


__all__ = ["PROGRESS_EVERY_S", "ProgressLog", "WorkerOutcome", "run_isolated"]
