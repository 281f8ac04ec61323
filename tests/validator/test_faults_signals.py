"""A validator process killed mid-round, or asked to stop, loses nothing and counts nothing twice.

The validator runs in a child process (`tests/validator/fault_runner.py`) on a devnet and a
directory hub built here; its stand-in evaluator takes a while per model and writes a line
to a log file when it starts one, so the test knows when the round is under way.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import competitions
from constants import EMA_ALPHA
from finetune.validator.state import STATE_VERSION, load_state
from tests.validator import fault_runner
from tests.validator.fault_models import variant
from tests.validator.helpers import make_subnet, publish_model

REASONING = competitions.LOCAL_REASONING.id
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 60  # the child imports torch and transformers first


def _spawn(tmp_path: Path, mode: str, *, sleep_s: float, log: Path, slow: tuple[str, ...] = ()) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.validator.fault_runner", str(tmp_path), mode,
               "--sleep", str(sleep_s), "--log", str(log)]
    if slow:
        command += ["--slow", *slow]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _wait_for_line(process: subprocess.Popen, log: Path, line: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if log.exists() and line in log.read_text().splitlines():
            return
        if process.poll() is not None:
            pytest.fail(f"validator exited early ({process.returncode}):\n{process.stdout.read().decode()[-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"validator never logged {line!r}")


@pytest.fixture
def subnet(tmp_path, tiny_model_dir, tmp_path_factory):
    """Two miners, alpha (better) and beta, past their eval delay."""
    chain, store = make_subnet(tmp_path, ["alpha", "beta"])
    publish_model(chain, store, tiny_model_dir, hotkey="alpha", repo_id="alpha/model", competition_id=REASONING)
    other = variant(tiny_model_dir, tmp_path_factory.mktemp("beta") / "m")
    publish_model(chain, store, other, hotkey="beta", repo_id="beta/model", competition_id=REASONING)
    chain.advance(5)
    return chain, store


def test_sigkill_mid_round_then_restart_redoes_the_round_once(tmp_path, subnet):
    chain, _ = subnet
    first = fault_runner.build(tmp_path)
    (round_one,) = first.run_once()
    ema_one = dict(first.state.competition(REASONING).ema)
    assert ema_one == pytest.approx({"alpha": 1 - EMA_ALPHA})  # beta lost: no weight
    state_path = tmp_path / "state.json"
    saved_before = state_path.read_bytes()

    chain.advance(360)  # the next sync window: a round is due
    log = tmp_path / "killed.log"
    process = _spawn(tmp_path, "once", sleep_s=60, log=log, slow=("beta",))
    _wait_for_line(process, log, "beta start")  # alpha scored, beta half-way: kill now
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL
    assert log.read_text().splitlines() == ["alpha start", "alpha done", "beta start"]

    # Whatever the killed process did, the file is the last complete state, still loadable.
    raw = json.loads(state_path.read_bytes())
    assert raw["version"] == STATE_VERSION
    assert state_path.read_bytes() == saved_before
    assert not list(tmp_path.glob("state.json.bad-*")) and not list(tmp_path.glob(".state.json.*.tmp"))

    restarted = fault_runner.build(tmp_path)
    (round_two,) = restarted.run_once()
    assert round_two.window_block == round_one.window_block + 360
    comp = load_state(state_path).competition(REASONING)
    assert comp.last_window == round_two.window_block
    for hotkey in ("alpha", "beta"):
        windows = [record.window_block for record in comp.history[hotkey]]
        assert windows == [round_one.window_block, round_two.window_block]  # one record per window
    step = {"alpha": 1.0, "beta": 0.0}
    expected = {h: EMA_ALPHA * ema_one.get(h, 0.0) + (1 - EMA_ALPHA) * step[h] for h in step}
    assert {h: comp.ema.get(h, 0.0) for h in step} == pytest.approx(expected)  # exactly one update


def test_sigterm_abandons_the_model_saves_state_and_exits_zero(tmp_path, subnet):
    log = tmp_path / "term.log"
    process = _spawn(tmp_path, "daemon", sleep_s=60, log=log)
    _wait_for_line(process, log, "alpha start")
    asked = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    output = process.stdout.read().decode()
    assert code == 0, output[-3000:]
    assert time.monotonic() - asked < 20  # far less than the 60 s the model would take
    assert log.read_text().splitlines() == ["alpha start", "alpha aborted"]  # beta never started

    state = load_state(tmp_path / "state.json")
    assert {h: m.status for h, m in state.models.items()} == {"alpha": "ready", "beta": "ready"}
    comp = state.competition(REASONING)
    assert comp.last_window == -1 and comp.history == {} and comp.ema == {}  # the round was abandoned
    assert sorted(comp.pending) == ["alpha", "beta"]  # and is redone on the next start
