"""BittensorChain driven through the real bittensor SDK with an injected in-memory substrate."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from bittensor.sp_core import Keypair

from finetune.chain.bittensor_backend import BittensorChain
from finetune.chain.model_id import ModelId, parse_commitment
from finetune.errors import (
    ChainError,
    ChainTimeout,
    ChainUnreachable,
    NotRegistered,
    RateLimited,
    SpaceLimitExceeded,
)
from tests.chain.fake_substrate import SPACE_LIMIT_EXCEEDED, FakeNeuron, FakeSubstrate

ALICE = Keypair.create_from_uri("//Alice")
BOB = Keypair.create_from_uri("//Bob")
CHARLIE = Keypair.create_from_uri("//Charlie")
MODEL = ModelId("alice", "tiny-1", "a" * 40, "A" * 43 + "=", 3)


def _wallet(hotkey: Keypair, coldkey: Keypair = ALICE) -> SimpleNamespace:
    # A KeyedWallet shape: what the SDK signs with (coldkey for "coldkey", hotkey for "hotkey").
    return SimpleNamespace(coldkey=coldkey, coldkeypub=coldkey, hotkey=hotkey)


@pytest.fixture
def fake() -> FakeSubstrate:
    return FakeSubstrate(
        netuid=7,
        block=1000,
        neurons=[
            FakeNeuron(
                BOB.ss58_address, ALICE.ss58_address, stake_alpha=1500.5, validator_permit=True
            ),
            FakeNeuron(CHARLIE.ss58_address, ALICE.ss58_address, stake_alpha=2.0),
        ],
    )


@pytest.fixture
def chain(fake):
    client = BittensorChain("local", netuid=7, timeout_s=5, substrate=fake)
    yield client
    client.close()


def test_block_and_hash(chain, fake):
    assert chain.current_block() == 1000
    assert chain.block_hash(12) == "0x" + "0" * 62 + "0c"


def test_commitment_round_trip_sends_hotkey_signed_raw_field(chain, fake):
    text = MODEL.to_commitment()
    chain.publish_commitment(_wallet(BOB), text)

    call, signer, options = fake.submitted[-1]
    assert (call.module, call.function) == ("Commitments", "set_commitment")
    raw = text.encode()
    assert call.params == {"netuid": 7, "info": {"fields": [{f"Raw{len(raw)}": raw}]}}
    assert signer == BOB.ss58_address  # the hotkey, not the coldkey (ALICE)
    assert options["wait_for_inclusion"] is True

    fake.block = 1005
    assert chain.read_commitment(BOB.ss58_address) == (text, 1000)
    assert parse_commitment(chain.read_commitment(BOB.ss58_address)[0]) == MODEL
    assert chain.read_commitment(CHARLIE.ss58_address) is None


def test_metagraph_maps_stake_permit_and_commitments(chain, fake):
    chain.publish_commitment(_wallet(CHARLIE), MODEL.to_commitment())
    fake.block = 1010
    graph = chain.metagraph()

    assert (graph.block, graph.netuid, graph.uids) == (1010, 7, (0, 1))
    assert graph.hotkeys == (BOB.ss58_address, CHARLIE.ss58_address)
    bob, charlie = graph.neurons
    assert bob.stake == pytest.approx(1500.5) and bob.validator_permit
    assert (bob.commitment, bob.commitment_block) == (None, None)
    assert charlie.stake == pytest.approx(2.0) and not charlie.validator_permit
    assert (charlie.commitment, charlie.commitment_block) == (MODEL.to_commitment(), 1000)
    assert graph.by_hotkey(CHARLIE.ss58_address) == charlie


def test_metagraph_of_missing_subnet_is_an_error(fake):
    client = BittensorChain("local", netuid=99, timeout_s=5, substrate=fake)
    with pytest.raises(ChainError, match="subnet 99 does not exist"):
        client.metagraph()
    client.close()


def test_unregistered_commitment_maps_to_not_registered(chain):
    dave = Keypair.create_from_uri("//Dave")
    with pytest.raises(NotRegistered, match="publish_commitment"):
        chain.publish_commitment(_wallet(dave), MODEL.to_commitment())


def test_space_limit_maps_to_space_limit_exceeded(chain, fake):
    fake.fail_next_submit = SPACE_LIMIT_EXCEEDED
    with pytest.raises(SpaceLimitExceeded) as info:
        chain.publish_commitment(_wallet(BOB), MODEL.to_commitment())
    assert isinstance(info.value, RateLimited)


def test_oversized_commitment_is_refused_before_submitting(chain, fake):
    with pytest.raises(ValueError, match="129 bytes"):
        chain.publish_commitment(_wallet(BOB), "x" * 129)
    assert fake.submitted == []


def test_set_weights_submits_quantised_weights_with_version_key(chain, fake):
    chain.set_weights(_wallet(BOB), {0: 0.25, 1: 0.75}, version_key=1234)
    call, signer, _ = fake.submitted[-1]
    assert (call.module, call.function) == ("SubtensorModule", "set_mechanism_weights")
    assert signer == BOB.ss58_address
    assert call.params["version_key"] == 1234
    assert call.params["dests"] == [0, 1]
    assert call.params["weights"] == [21845, 65535]  # max-upscaled to u16
    rows = chain.validator_weights()
    assert rows == {0: pytest.approx({0: 0.25, 1: 0.75}, abs=1e-4)}


def test_set_weights_not_registered(chain):
    with pytest.raises(NotRegistered):
        chain.set_weights(_wallet(Keypair.create_from_uri("//Eve")), {0: 1.0}, version_key=1)


def test_set_weights_rate_limited_carries_retry_blocks(chain, fake):
    fake.weights_rate_limit = 100
    fake.neurons[0].last_update = 960  # 40 blocks ago
    with pytest.raises(RateLimited) as info:
        chain.set_weights(_wallet(BOB), {0: 1.0}, version_key=1)
    assert info.value.retry_after_blocks == 60


def test_set_weights_rejects_bad_weights_locally(chain, fake):
    with pytest.raises(ValueError):
        chain.set_weights(_wallet(BOB), {0: 0.0}, version_key=1)
    with pytest.raises(ValueError):
        chain.set_weights(_wallet(BOB), {0: float("nan")}, version_key=1)
    assert fake.submitted == []


def test_hanging_call_hits_chain_timeout(fake):
    fake.hang = True
    client = BittensorChain("local", netuid=7, timeout_s=0.3, substrate=fake)
    start = time.monotonic()
    with pytest.raises(ChainTimeout, match="current_block"):
        client.current_block()
    assert time.monotonic() - start < 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_maps_to_chain_unreachable():
    client = BittensorChain(f"ws://127.0.0.1:{_closed_port()}", netuid=7, timeout_s=10)
    start = time.monotonic()
    with pytest.raises(ChainUnreachable):
        client.current_block()
    assert time.monotonic() - start < 5
    client.close()


def test_weights_version_reads_the_subnet_hyperparameter(chain, fake):
    assert chain.weights_version() == 0
    fake.weights_version = 3010
    assert chain.weights_version() == 3010
