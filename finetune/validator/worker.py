"""Score one model in an isolated process with a hard deadline.

A miner's model can crash the interpreter, exhaust memory, produce NaN or simply take too long.
None of that may stop the validator: the model is scored in a child process that is killed at
its deadline, and every failure becomes a finite record with an infinite score and a reason.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.text import printable

logger = logging.getLogger(__name__)

# Modules the fork server imports once, so each scoring process starts in well under a second.
_PRELOAD = ["torch", "transformers", "finetune.eval"]


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


def _context() -> mp.context.BaseContext:
    if sys.platform.startswith("linux"):
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _default_job(model_dir: str, competition: Any, task_data: Any, options: dict) -> dict:
    from finetune.eval import evaluate_model

    evaluation = evaluate_model(Path(model_dir), competition, task_data, **options)
    return evaluation.to_json()


def _child(conn, job: Callable[..., dict], args: tuple) -> None:
    """Runs in the child: do the job and send back a plain dict, or the error."""
    try:
        result = job(*args)
        conn.send(("ok", result))
    except BaseException as exc:  # noqa: BLE001 - the boundary: everything must come back as data
        reason = getattr(exc, "reason", type(exc).__name__)
        head = printable(exc, 4000).replace("\\x0d", "\\x0a")  # a chat template picks this text
        message = printable(head.split("\\x0a", 1)[0], 500) if head else type(exc).__name__
        if isinstance(exc, MemoryError) or "out of memory" in head.lower():
            reason = "out_of_memory"
        conn.send(("error", {"reason": printable(reason, 40), "detail": message}))
    finally:
        conn.close()


def _outcome_from_result(result: dict, elapsed: float) -> WorkerOutcome:
    total = float(result.get("total", math.inf))
    tasks = {name: dict(values) for name, values in result.get("tasks", {}).items()}
    if total < 0:
        # Losses and error rates are never negative; a negative total would invert every win.
        return WorkerOutcome(False, math.inf, tasks, result.get("dropped", {}), "negative_score",
                             f"score {total} is negative", elapsed)
    if math.isnan(total):
        return WorkerOutcome(False, math.inf, tasks, result.get("dropped", {}), "nan", "score is NaN", elapsed)
    if not math.isfinite(total):
        # evaluate_model reports a NaN task loss as inf; without a reason the miner would
        # only see an infinite score.
        failed = sorted(name for name, values in tasks.items() if not math.isfinite(values.get("raw", math.inf)))
        detail = f"no finite score on {', '.join(failed)}" if failed else "no task left to score"
        return WorkerOutcome(False, math.inf, tasks, dict(result.get("dropped", {})), "non_finite", detail, elapsed)
    return WorkerOutcome(True, total, tasks, dict(result.get("dropped", {})), elapsed_s=elapsed)


def run_isolated(
    model_dir: str | Path,
    competition: Any,
    task_data: Any,
    *,
    deadline_s: float,
    options: dict | None = None,
    job: Callable[..., dict] | None = None,
    should_abort: Callable[[], bool] | None = None,
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

    Returns:
        A `WorkerOutcome`; never raises for anything the model does.
    """
    if should_abort is not None and should_abort():  # shutting down: start nothing new
        return WorkerOutcome(False, math.inf, reason="aborted", detail="shutdown requested")
    ctx = _context()
    receiver, sender = ctx.Pipe(duplex=False)
    args = (str(model_dir), competition, task_data, options or {})
    process = ctx.Process(target=_child, args=(sender, job or _default_job, args), daemon=True)
    started = time.monotonic()
    try:
        process.start()
    except OSError as exc:  # no memory or file handles left for a fork: this model fails
        sender.close()
        receiver.close()
        return WorkerOutcome(False, math.inf, reason="crashed", detail=f"worker did not start: {exc}")
    sender.close()  # the child holds the only writer now, so a dead child means EOF here
    message = None
    try:
        while True:
            elapsed = time.monotonic() - started
            if receiver.poll(min(0.5, max(deadline_s - elapsed, 0.0))):
                try:
                    message = receiver.recv()
                except EOFError:
                    message = None
                break
            if time.monotonic() - started >= deadline_s:
                return WorkerOutcome(False, math.inf, reason="timeout", detail=f"exceeded {deadline_s:.0f}s", elapsed_s=deadline_s)
            if should_abort is not None and should_abort():
                return WorkerOutcome(False, math.inf, reason="aborted", detail="shutdown requested")
            if not process.is_alive() and not receiver.poll(0):
                break
    finally:
        if process.is_alive():
            process.kill()
        process.join(timeout=10)
        receiver.close()
    elapsed = time.monotonic() - started
    if message is None:
        return WorkerOutcome(False, math.inf, reason="crashed", detail=f"worker exit code {process.exitcode}", elapsed_s=elapsed)
    kind, payload = message
    if kind == "error":
        return WorkerOutcome(False, math.inf, reason=payload["reason"], detail=payload["detail"], elapsed_s=elapsed)
    return _outcome_from_result(payload, elapsed)
