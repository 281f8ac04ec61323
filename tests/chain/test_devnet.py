"""DevnetChain: blocks, registration, commitments, weights, limits, and two processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from finetune.chain import ChainClient, DevnetChain, open_chain
from finetune.chain.devnet import devnet_block_hash
from finetune.errors import ChainTimeout, ConfigError, NotRegistered, RateLimited


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def devnet(tmp_path, clock) -> DevnetChain:
    return DevnetChain(tmp_path / "chain.db", netuid=5, block_time_s=12.0, clock=clock)


def test_is_a_chain_client(devnet):
    assert isinstance(devnet, ChainClient)


def test_block_follows_wall_clock_and_advance(devnet, clock):
    assert devnet.current_block() == 0
    clock.now += 12 * 3 + 5
    assert devnet.current_block() == 3
    assert devnet.advance(100) == 103
    assert devnet.current_block() == 103
    with pytest.raises(ConfigError):
        devnet.advance(-1)


def test_block_hash_is_deterministic_hex(devnet):
    assert devnet.block_hash(7) == devnet_block_hash(5, 7) == devnet.block_hash(7)
    assert devnet.block_hash(7) != devnet.block_hash(8)
    assert devnet.block_hash(7) != devnet_block_hash(6, 7)
    assert devnet.block_hash(7).startswith("0x") and len(devnet.block_hash(7)) == 66


def test_register_assigns_uids_and_reregister_updates(devnet):
    assert devnet.register("hk-a", stake=10.0, validator_permit=True) == 0
    assert devnet.register("hk-b") == 1
    assert devnet.register("hk-a", stake=20.0) == 0
    graph = devnet.metagraph()
    assert graph.uids == (0, 1) and graph.hotkeys == ("hk-a", "hk-b")
    assert graph.by_hotkey("hk-a").stake == 20.0
    assert graph.by_hotkey("hk-a").validator_permit is False
    assert graph.netuid == 5


def test_commitment_round_trip_and_metagraph(devnet, clock):
    devnet.register("hk-a")
    devnet.advance(40)
    devnet.publish_commitment("hk-a", "alice:m:commit")
    assert devnet.read_commitment("hk-a") == ("alice:m:commit", 40)
    assert devnet.read_commitment("hk-b") is None
    neuron = devnet.metagraph().by_hotkey("hk-a")
    assert (neuron.commitment, neuron.commitment_block) == ("alice:m:commit", 40)


def test_commitment_needs_registration_and_respects_rate_limit(devnet):
    with pytest.raises(NotRegistered):
        devnet.publish_commitment("nobody", "x")
    devnet.register("hk-a")
    devnet.publish_commitment("hk-a", "one")
    devnet.advance(4)
    with pytest.raises(RateLimited) as info:
        devnet.publish_commitment("hk-a", "two")
    assert info.value.retry_after_blocks == 6
    devnet.advance(6)
    devnet.publish_commitment("hk-a", "two")
    assert devnet.read_commitment("hk-a") == ("two", 10)


def test_oversized_commitment_refused(devnet):
    devnet.register("hk-a")
    with pytest.raises(ValueError):
        devnet.publish_commitment("hk-a", "é" * 65)


def test_wallet_objects_are_accepted(devnet):
    class Key:
        ss58_address = "hk-a"

    class Wallet:
        hotkey = Key()

    devnet.register("hk-a")
    devnet.publish_commitment(Wallet(), "data")
    assert devnet.read_commitment("hk-a")[0] == "data"


def test_set_weights_normalises_and_rate_limits(devnet):
    for hotkey in ("v", "m1", "m2"):
        devnet.register(hotkey)
    devnet.set_weights("v", {1: 1.0, 2: 3.0, 0: 0.0}, version_key=42)
    assert devnet.validator_weights() == {0: {1: 0.25, 2: 0.75}}
    assert devnet.recent_weights() == [(0, 0, 42)]
    with pytest.raises(RateLimited) as info:
        devnet.set_weights("v", {1: 1.0}, version_key=42)
    assert info.value.retry_after_blocks == 10
    devnet.advance(10)
    devnet.set_weights("v", {1: 1.0}, version_key=43)
    assert devnet.validator_weights() == {0: {1: 1.0}}


def test_set_weights_rejections(devnet):
    with pytest.raises(NotRegistered):
        devnet.set_weights("v", {0: 1.0}, version_key=1)
    devnet.register("v")
    for bad in ({0: 0.0}, {0: -1.0}, {0: float("inf")}, {9: 1.0}):
        with pytest.raises(ValueError):
            devnet.set_weights("v", bad, version_key=1)
    assert devnet.validator_weights() == {}


def test_reopen_keeps_state_and_checks_netuid(tmp_path, devnet):
    devnet.register("hk-a")
    again = DevnetChain(devnet.path, create=False)
    assert again.netuid == 5 and again.metagraph().hotkeys == ("hk-a",)
    with pytest.raises(ConfigError, match="netuid 5, not 6"):
        DevnetChain(devnet.path, netuid=6)
    with pytest.raises(ConfigError):
        DevnetChain(tmp_path / "missing.db", create=False)


def test_open_chain_specs(tmp_path, devnet):
    assert isinstance(open_chain(f"devnet:{devnet.path}", netuid=5), DevnetChain)
    with pytest.raises(ConfigError, match="scripts/devnet.py init"):
        open_chain(f"devnet:{tmp_path / 'nope.db'}", netuid=5)
    with pytest.raises(ConfigError, match="finney \\| test \\| local"):
        open_chain("mainnet", netuid=5)


def test_held_lock_becomes_chain_timeout(tmp_path):
    chain = DevnetChain(tmp_path / "c.db", timeout_s=0.2)
    holder = sqlite3.connect(chain.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ChainTimeout):
            chain.register("hk")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert chain.register("hk") == 0


def _worker(path: str, prefix: str, count: int, queue, start) -> None:
    chain = DevnetChain(path, create=False)
    errors = []
    start.wait(30)  # a barrier: both processes are up before either writes, so writes overlap
    for i in range(count):
        try:
            hotkey = f"{prefix}-{i}"
            chain.register(hotkey)
            chain.publish_commitment(hotkey, f"data-{hotkey}")
            chain.metagraph()
            chain.current_block()
        except Exception as error:  # reported to the parent, which asserts none
            errors.append(repr(error))
    queue.put(errors)


def test_two_processes_write_and_read_concurrently(tmp_path):
    path = tmp_path / "shared.db"
    DevnetChain(path, netuid=3)
    ctx = multiprocessing.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Barrier(2)
    procs = [ctx.Process(target=_worker, args=(str(path), p, 60, queue, start)) for p in ("a", "b")]
    for proc in procs:
        proc.start()
    results = [queue.get(timeout=60) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert results == [[], []]
    graph = DevnetChain(Path(path)).metagraph()
    assert len(graph.neurons) == 120 and sorted(graph.uids) == list(range(120))
    assert all(n.commitment == f"data-{n.hotkey}" for n in graph.neurons)


def test_weights_version_is_enforced_like_the_chain(tmp_path):
    from finetune.chain import DevnetChain
    from finetune.errors import ChainError

    chain = DevnetChain(tmp_path / "d.sqlite", weights_rate_limit=0)
    chain.register("vali", stake=1.0, validator_permit=True)
    chain.register("miner")
    assert chain.weights_version() == 0
    chain.set_weights_version(3010)
    assert chain.weights_version() == 3010
    with pytest.raises(ChainError, match="below the subnet's 3010"):
        chain.set_weights("vali", {1: 1.0}, version_key=3009)
    chain.set_weights("vali", {1: 1.0}, version_key=3010)
    assert chain.validator_weights() == {0: {1: 1.0}}
