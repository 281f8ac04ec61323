"""CallExecutor: one worker per client, deadlines, and fail-fast behind an outstanding call."""

from __future__ import annotations

import threading
import time

import pytest

from finetune.chain import CallExecutor, call_with_deadline
from finetune.errors import ChainTimeout


@pytest.fixture
def executor():
    calls = CallExecutor("test")
    yield calls
    calls.close()


@pytest.fixture
def release():
    event = threading.Event()
    yield event
    event.set()  # a stuck call left over from a failed test still returns


def _workers(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"chain:{name}"]


def _until(predicate, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_deadline_returns_value_and_reraises_errors(executor):
    assert call_with_deadline(lambda: 42, timeout_s=1, what="x", executor=executor) == 42
    with pytest.raises(KeyError):
        call_with_deadline(lambda: {}["missing"], timeout_s=1, what="x", executor=executor)


def test_deadline_gives_up_on_a_stuck_call(executor, release):
    start = time.monotonic()
    with pytest.raises(ChainTimeout, match="stuck did not return within 0.1s") as info:
        call_with_deadline(lambda: release.wait(30), timeout_s=0.1, what="stuck", executor=executor)
    assert time.monotonic() - start < 1
    assert info.value.reason == "chain_timeout"
    assert info.value.facts["call"] == "stuck"


def test_calls_run_on_one_worker_thread(executor):
    seen = {executor.call(threading.get_ident, timeout_s=1, what="ident") for _ in range(5)}
    assert len(seen) == 1 and threading.get_ident() not in seen
    assert len(_workers("test")) == 1


def test_outstanding_call_refuses_new_calls_at_once_until_it_returns(executor, release):
    with pytest.raises(ChainTimeout):
        executor.call(lambda: release.wait(30), timeout_s=0.1, what="stuck")
    assert executor.outstanding == "stuck"

    start = time.monotonic()
    with pytest.raises(ChainTimeout, match="previous call stuck is still outstanding") as info:
        executor.call(lambda: "never runs", timeout_s=5, what="next")
    assert time.monotonic() - start < 1  # no wait for its own 5 s deadline
    assert info.value.facts == {"call": "next", "outstanding": "stuck"}
    assert len(_workers("test")) == 1

    release.set()
    assert _until(lambda: executor.outstanding is None)
    assert executor.call(lambda: "back", timeout_s=1, what="next") == "back"


def test_callers_waiting_behind_a_call_fail_once_it_is_abandoned(executor, release):
    outcome: dict[str, object] = {}

    def second() -> None:
        time.sleep(0.05)  # behind the stuck call, which holds the worker
        start = time.monotonic()
        try:
            executor.call(lambda: "never runs", timeout_s=5, what="second")
        except ChainTimeout as error:
            outcome["error"], outcome["waited_s"] = error, time.monotonic() - start

    waiter = threading.Thread(target=second)
    waiter.start()
    with pytest.raises(ChainTimeout):
        executor.call(lambda: release.wait(30), timeout_s=0.3, what="stuck")
    waiter.join(5)
    assert outcome["error"].facts["outstanding"] == "stuck"
    assert outcome["waited_s"] < 1  # woken when the first caller gave up, not after 5 s


def test_a_call_waits_its_turn_within_its_deadline(executor):
    slow_started = threading.Event()

    def slow() -> str:
        slow_started.set()
        time.sleep(0.3)
        return "slow"

    results: dict[str, object] = {}
    first = threading.Thread(target=lambda: results.update(slow=executor.call(slow, timeout_s=5, what="slow")))
    first.start()
    assert slow_started.wait(2)
    with pytest.raises(ChainTimeout, match="quick did not start within 0.1s: slow was still running"):
        executor.call(lambda: "quick", timeout_s=0.1, what="quick")
    assert executor.call(lambda: "patient", timeout_s=5, what="patient") == "patient"
    first.join(5)
    assert results == {"slow": "slow"}
    assert executor.outstanding is None  # only waited: nothing was abandoned


def test_idle_worker_exits_and_the_next_call_starts_another():
    calls = CallExecutor("idle", idle_s=0.05)
    assert calls.call(lambda: 1, timeout_s=1, what="x") == 1
    assert _until(lambda: not _workers("idle"))
    assert calls.call(lambda: 2, timeout_s=1, what="x") == 2


def test_close_lets_the_worker_exit(executor):
    executor.call(lambda: None, timeout_s=1, what="x")
    assert len(_workers("test")) == 1
    executor.close()
    assert _until(lambda: not _workers("test"))
    assert executor.call(lambda: "again", timeout_s=1, what="x") == "again"
