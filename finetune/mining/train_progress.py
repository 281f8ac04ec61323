"""The miner's training progress bar: steps, loss and time spent against the budget, with an ETA.

The run ends at its last step or when its wall-clock budget is spent, whichever comes first,
so the bar shows the larger of the two fractions and the sooner of the two ends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


def progress_status(
    *, step: int, max_steps: int, spent_s: float, budget_s: float, seconds_per_step: float | None,
    loss: float | None = None,
) -> tuple[float, str]:
    """How far a training run is, and the line that says so.

    The run ends at its last step or when the budget is spent, whichever comes first: the
    fraction done is the larger of the two, and the ETA the sooner.

    Args:
        step: optimiser steps done.
        max_steps: the run's last step (0 if unknown).
        spent_s: budget spent so far, earlier runs included.
        budget_s: the whole budget.
        seconds_per_step: the pace of this run (None before its first step).
        loss: the last logged training loss.

    Returns:
        ``(fraction in [0, 1], "step 120/1000  loss 1.234  0:10:00 of 24:00:00  ETA 1:20:00")``.
    """
    by_steps = step / max_steps if max_steps > 0 else 0.0
    fraction = min(max(by_steps, spent_s / budget_s if budget_s > 0 else 1.0), 1.0)
    left_s = max(budget_s - spent_s, 0.0)
    if seconds_per_step is not None and max_steps > 0:
        left_s = min(left_s, max(max_steps - step, 0) * seconds_per_step)
    eta = _clock_time(left_s) if seconds_per_step is not None else "?"
    parts = [f"step {step}/{max_steps}" if max_steps > 0 else f"step {step}"]
    if loss is not None and math.isfinite(loss):
        parts.append(f"loss {loss:.4g}")
    parts += [f"{_clock_time(spent_s)} of {_clock_time(budget_s)}", f"ETA {eta}"]
    return fraction, "  ".join(parts)


def _clock_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class TrainingProgress(TrainerCallback):
    """A rich progress bar of the training on the main process: steps, loss, and the time
    spent against the budget, with the ETA (see `progress_status`). Shown only when the
    console is a terminal; in a log file it would be noise (the callbacks log the steps).

    Args:
        budget: the run's `TimeBudgetCallback` (its `spent()` and `max_seconds`).
        console: where the bar goes (default: stderr).
        clock: monotonic clock, for tests.
    """

    def __init__(self, budget: Any, *, console: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from rich.console import Console

        self.budget = budget
        self.console = console or Console(stderr=True)
        self._clock = clock
        self._bar: Any = None
        self._task: Any = None
        self._begin: tuple[float, int] = (0.0, 0)
        self._loss: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if not getattr(state, "is_world_process_zero", True) or not self.console.is_terminal:
            return
        from rich.progress import BarColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("training"), BarColumn(), TextColumn("{task.fields[status]}"),
                             console=self.console)
        self._task = self._bar.add_task("training", total=1.0, status="")
        self._begin = (self._clock(), state.global_step)
        self._bar.start()
        self._update(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_step_end(self, args, state, control, **kwargs):
        self._update(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self._bar is not None:
            self._update(state)
            self._bar.stop()
            self._bar = None

    def _update(self, state: Any) -> None:
        if self._bar is None:
            return
        started, first_step = self._begin
        steps = state.global_step - first_step
        pace = (self._clock() - started) / steps if steps > 0 else None
        fraction, status = progress_status(
            step=state.global_step, max_steps=int(state.max_steps or 0), spent_s=self.budget.spent(),
            budget_s=self.budget.max_seconds, seconds_per_step=pace, loss=self._loss,
        )
        self._bar.update(self._task, completed=fraction, status=status)


__all__ = ["TrainingProgress", "progress_status"]
