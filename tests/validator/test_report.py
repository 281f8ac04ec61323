"""The round's console table, plain lines and JSON lines: a failed task shows why."""

import io
import json
import math

from rich.console import Console

from finetune.validator.report import failure_code, round_json, round_lines, round_table
from finetune.validator.round import ModelRoundResult, RoundResult

DEGENERATE = "degenerate: 12 of 20 gate positions agree"


def _result() -> RoundResult:
    gated = ModelRoundResult(hotkey="h1", uid=3, repo_id="ns/gated", revision="a" * 40, block=10, score=0.75,
                             win_rate=1.0, epsilon_advantage=0.05,
                             tasks={"FINEWEB": (math.inf, 1.0), "REF": (0.5, 0.5)},
                             task_failures={"FINEWEB": DEGENERATE})
    healthy = ModelRoundResult(hotkey="h2", uid=4, repo_id="ns/healthy", revision="b" * 40, block=20, score=0.8,
                               win_rate=0.0, epsilon_advantage=0.05, tasks={"FINEWEB": (6.0, 0.4), "REF": (1.2, 1.2)})
    return RoundResult(competition_id=101, competition_name="LOCAL_INSTRUCT", window_block=0, seed=1, block_now=30,
                       models=(gated, healthy), step_weights={"h1": 1.0, "h2": 0.0}, ema={"h1": 0.1},
                       dropped_tasks={})


def test_failure_code_is_the_part_before_the_colon():
    assert failure_code(DEGENERATE) == "degenerate"
    assert failure_code("no_samples") == "no_samples"


def test_the_table_cell_of_a_failed_task_names_its_failure():
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(round_table(_result()))
    text = console.export_text()
    gated = next(line for line in text.splitlines() if "ns/gated" in line)
    assert "inf/1.000 (degenerate)" in gated
    assert f"FINEWEB: {DEGENERATE}" in gated  # the note says which task and why
    healthy = next(line for line in text.splitlines() if "ns/healthy" in line)
    assert "6.000/0.400" in healthy and "(" not in healthy.split("ns/healthy")[1]


def test_plain_lines_and_json_lines_carry_the_failure():
    lines = round_lines(_result())
    gated = next(line for line in lines if "ns/gated" in line)
    assert "FINEWEB=inf/1.0000(degenerate)" in gated
    assert gated.endswith(f"failed_tasks FINEWEB: {DEGENERATE}")
    assert "failed_tasks" not in next(line for line in lines if "ns/healthy" in line)
    records = {r["uid"]: r for r in map(json.loads, round_json(_result()))}
    assert records[3]["tasks"]["FINEWEB"] == {"raw": "inf", "normalized": 1.0, "failure": DEGENERATE}
    assert records[4]["tasks"]["REF"]["failure"] == ""
