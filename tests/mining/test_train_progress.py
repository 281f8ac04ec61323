"""The training progress bar: the fraction and ETA against steps and budget, shown on a terminal only."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from rich.console import Console

from finetune.mining.train_progress import TrainingProgress, progress_status


def test_steps_end_first():
    fraction, line = progress_status(step=100, max_steps=1000, spent_s=600, budget_s=86400, seconds_per_step=6.0,
                                     loss=1.23456)
    assert fraction == pytest.approx(0.1)
    assert line == "step 100/1000  loss 1.235  0:10:00 of 24:00:00  ETA 1:30:00"


def test_the_budget_ends_first():
    # 900 steps at 60 s would take 15 h; 1 h of the budget is left.
    fraction, line = progress_status(step=100, max_steps=1000, spent_s=23 * 3600, budget_s=24 * 3600,
                                     seconds_per_step=60.0)
    assert fraction == pytest.approx(23 / 24)
    assert line.endswith("23:00:00 of 24:00:00  ETA 1:00:00") and "loss" not in line


def test_before_the_first_step_the_eta_is_unknown():
    fraction, line = progress_status(step=0, max_steps=0, spent_s=0, budget_s=3600, seconds_per_step=None)
    assert fraction == 0.0 and line == "step 0  0:00:00 of 1:00:00  ETA ?"


class _Budget:
    max_seconds = 3600.0

    def __init__(self):
        self.now = 0.0

    def spent(self):
        return self.now


def _run(console):
    budget = _Budget()
    clock = [0.0]
    bar = TrainingProgress(budget, console=console, clock=lambda: clock[0])
    state = SimpleNamespace(global_step=0, max_steps=10, is_world_process_zero=True)
    bar.on_train_begin(None, state, None)
    for step in range(1, 11):
        clock[0] = budget.now = 30.0 * step
        state.global_step = step
        bar.on_log(None, state, None, logs={"loss": 2.0 / step})
        bar.on_step_end(None, state, None)
    bar.on_train_end(None, state, None)


def test_on_a_terminal_the_bar_shows_steps_loss_budget_and_eta():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=True, width=120))
    text = out.getvalue()
    assert "training" in text and "step 10/10" in text and "loss 0.2" in text and "0:05:00 of 1:00:00" in text
    assert "ETA 0:00:00" in text


def test_off_a_terminal_nothing_is_drawn():
    out = io.StringIO()
    _run(Console(file=out, force_terminal=False))
    assert out.getvalue() == ""
