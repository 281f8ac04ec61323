"""BittensorChain against a hung node: a bounded number of threads, fast failures, recovery.

Drives the real SDK through the injected in-memory substrate; ``stall`` makes that node stop
answering every request until it is cleared.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from finetune.chain.bittensor_backend import BittensorChain
from finetune.errors import ChainBusy, ChainTimeout
from tests.chain.fake_substrate import FakeNeuron, FakeSubstrate

EXTRA_THREADS = 2  # one call worker per client, plus the SDK's own event-loop thread


@pytest.fixture
def fake():
    node = FakeSubstrate(netuid=7, block=1000, neurons=[FakeNeuron("hot-a", "cold-a", 10.0)])
    yield node
    node.stall = False  # let any call still hung at the end return


def _client(fake: FakeSubstrate, timeout_s: float) -> BittensorChain:
    return BittensorChain("local", netuid=7, timeout_s=timeout_s, substrate=fake)


def _hammer(chain: BittensorChain, callers: int, seconds: float) -> tuple[int, Counter]:
    """Call the chain from `callers` threads for `seconds`; the peak thread count and the
    outcomes (a return value's type name or an exception's)."""
    outcomes: Counter = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    reads = (chain.current_block, chain.metagraph, chain.validator_weights,
             lambda: chain.read_commitment("hot-a"))

    def caller(index: int) -> None:
        while not stop.is_set():
            try:
                name = type(reads[index % len(reads)]()).__name__
            except ChainTimeout:
                name = "ChainTimeout"
            with lock:
                outcomes[name] += 1

    threads = [threading.Thread(target=caller, args=(i,), daemon=True) for i in range(callers)]
    for thread in threads:
        thread.start()
    peak, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        peak = max(peak, threading.active_count())
        time.sleep(0.005)
    stop.set()
    for thread in threads:
        thread.join(10)
    return peak, outcomes


def _until(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _answers(chain: BittensorChain) -> bool:
    try:
        return chain.current_block() == 1000
    except ChainTimeout:
        return False


def test_hung_node_keeps_threads_flat_and_the_client_recovers(fake):
    before = threading.active_count()
    chain = _client(fake, timeout_s=0.2)
    assert chain.current_block() == 1000  # connected: the SDK's loop thread is up

    fake.stall = True
    peak, outcomes = _hammer(chain, callers=4, seconds=3.0)
    assert peak <= before + 4 + EXTRA_THREADS  # the callers, one worker, the SDK loop
    assert set(outcomes) == {"ChainTimeout"}
    assert outcomes["ChainTimeout"] > 100  # all but the first failed fast, not in 0.2 s

    fake.stall = False
    assert _until(lambda: _answers(chain))
    assert chain.metagraph().uids == (0,)
    assert threading.active_count() <= before + EXTRA_THREADS
    chain.close()


def test_call_after_a_hang_fails_fast_naming_the_hung_call(fake):
    chain = _client(fake, timeout_s=1.0)
    assert chain.current_block() == 1000
    fake.stall = True
    with pytest.raises(ChainTimeout, match="current_block did not return within 1s"):
        chain.current_block()

    start = time.monotonic()
    with pytest.raises(ChainTimeout, match="still outstanding") as info:
        chain.metagraph()
    assert time.monotonic() - start < 0.25  # not its own 1 s deadline
    assert info.value.facts["outstanding"] == "current_block"
    assert isinstance(info.value, ChainBusy) and info.value.reason == "chain_busy"

    fake.stall = False
    assert _until(lambda: _answers(chain))
    assert chain.metagraph().block == 1000
    assert fake.connects == 1  # the SDK client is kept: its session survives the hang
    chain.close()


def test_concurrent_healthy_calls_take_turns_on_one_worker(fake):
    fake.delay_s = 0.02  # a busy node: calls overlap
    before = threading.active_count()
    chain = _client(fake, timeout_s=10)
    assert chain.current_block() == 1000

    peak, outcomes = _hammer(chain, callers=6, seconds=1.5)
    assert "ChainTimeout" not in outcomes  # waiting for a turn is not a failure
    assert sum(outcomes.values()) >= 6
    assert peak <= before + 6 + EXTRA_THREADS
    chain.close()


def test_close_ends_the_call_worker_and_the_sdk_loop(fake):
    chain = _client(fake, timeout_s=5)
    before = set(threading.enumerate())
    chain.current_block()
    started = set(threading.enumerate()) - before
    assert len(started) == EXTRA_THREADS
    chain.close()
    assert _until(lambda: not any(t.is_alive() for t in started))
